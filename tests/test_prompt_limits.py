"""A prompt too long for the text encoder the network reads is announced with that encoder's
limit, and only then.

Each family's limit is its diffusers pipeline's (``encode_prompt``, diffusers 0.42): CLIP's 77
tokens for SD and SDXL; T5 at ``max_sequence_length`` for SD3 (256), Flux dev (512), Flux
schnell (256 in seqwidgets) and Chroma (512); Gemma 2 for Lumina 2 (256); Qwen3 for Z-Image and
Flux.2 klein (512); Qwen2.5-VL for Qwen-Image (512); T5 and Llama 3.1 for HiDream (128);
Mistral 3 for Flux.2 dev (512). The stand-ins' tokenizers give one token per letter of a
word, so ``"a " * n`` is n tokens of prompt.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch

from seqwidgets.conditioning import PromptEncoder
from seqwidgets.testing import tiny_pipeline

# kind -> [(encoder, limit)], the encoders whose tokens the network reads
LIMITS = {
    "sd": [("CLIP", 77)],
    "sdxl": [("CLIP", 77)],
    "sd3": [("T5", 256)],
    "flux": [("T5", 512)],
    "flux-schnell": [("T5", 256)],
    "chroma": [("T5", 512)],
    "lumina2": [("Gemma 2", 256)],
    "zimage": [("Qwen3", 512)],
    "flux2": [("Qwen3", 512)],
    "flux2-dev": [("Mistral 3", 512)],
    "qwen-image": [("Qwen2.5-VL", 512)],
    "hidream": [("T5", 128), ("Llama 3.1", 128)],
}
MESSAGE = re.compile(
    r"prompt is (\d+) tokens; the text encoder reads only the first (\d+) \(([^,]+), .*"
    r"does not see: '(.*)'$",
    re.S,
)


@pytest.fixture(scope="module")
def pipes():
    return {}


def pipe_of(pipes, kind):
    if kind not in pipes:
        pipes[kind] = tiny_pipeline(kind)
    return pipes[kind]


def cuts(encoder: PromptEncoder, prompt: str) -> list[tuple[int, int, str, str]]:
    """``(tokens, limit, encoder, dropped text)`` of each warning encoding ``prompt`` gives."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoder.encode(prompt)
    found = []
    for warning in caught:
        text = str(warning.message)
        match = MESSAGE.match(text)
        if match:
            tokens, limit, name, dropped = match.groups()
            found.append((int(tokens), int(limit), name, dropped))
        elif text.startswith("prompt is"):  # a cut announced some other way
            found.append((0, 0, text, ""))
    return found


@pytest.mark.parametrize("kind", list(LIMITS))
def test_a_prompt_under_the_limit_is_not_announced(pipes, kind):
    # 100 tokens fit every encoder but CLIP (a T5 or Qwen family used to warn at CLIP's 77)
    n = 50 if kind in ("sd", "sdxl") else 100
    assert cuts(PromptEncoder(pipe_of(pipes, kind)), "a " * n) == []


@pytest.mark.parametrize("kind", list(LIMITS))
def test_a_long_prompt_names_its_encoder_and_limit_where_the_encoding_stops(pipes, kind):
    pipe = pipe_of(pipes, kind)
    n = max(limit for _, limit in LIMITS[kind]) + 60
    words = ["a"] * n
    encoder = PromptEncoder(pipe)
    found = cuts(encoder, " ".join(words))
    assert [(name, limit) for _, limit, name, _ in found] == LIMITS[kind]
    for tokens, limit, _, dropped in found:
        assert tokens > limit and tokens >= n
        assert set(dropped.split()) == {"a"}
    # The warning's count is where the encoder stops: the last word it keeps changes the
    # encoding, the first it drops does not (a fresh encoder: no cached encodings).
    kept = n - len(found[0][3].split())
    assert 0 < kept < n

    def encoding(changed: int) -> torch.Tensor:
        variant = list(words)
        variant[changed] = "b"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return PromptEncoder(pipe).encode(" ".join(variant)).embeds

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = PromptEncoder(pipe).encode(" ".join(words)).embeds
    assert torch.equal(encoding(kept), original)
    assert not torch.equal(encoding(kept - 1), original)


def test_sd3_without_its_t5_announces_clips_limit():
    # SD3 with no T5 (a random SD3 or a pipeline loaded without text_encoder_3) reads CLIP only
    pipe = tiny_pipeline("sd3")
    pipe.text_encoder_3 = pipe.tokenizer_3 = None
    found = cuts(PromptEncoder(pipe), "a " * 100)
    assert [(name, limit) for _, limit, name, _ in found] == [("CLIP", 77)]


def test_a_longer_max_sequence_length_moves_the_limit():
    pipe = tiny_pipeline("flux-schnell")
    assert cuts(PromptEncoder(pipe, max_sequence_length=512), "a " * 300) == []
    found = cuts(PromptEncoder(pipe, max_sequence_length=128), "a " * 200)
    assert [limit for _, limit, _, _ in found] == [128]


def test_the_limit_is_the_pipelines_text_encoders_whatever_its_transformer():
    # A Flux.2 klein pipeline holding a dev transformer (family flux2) still encodes with its
    # Qwen3 and no system message: Qwen3's limit is the one announced.
    from diffusers import Flux2Transformer2DModel

    pipe = tiny_pipeline("flux2")
    config = dict(pipe.transformer.config, guidance_embeds=True)
    pipe.transformer = Flux2Transformer2DModel.from_config(config).eval()
    found = cuts(PromptEncoder(pipe), "a " * 600)
    assert [(name, limit) for _, limit, name, _ in found] == [("Qwen3", 512)]
