"""The KSampler Sequence node run inside ComfyUI on Qwen-Image, Chroma, HiDream and Lumina 2,
against seqwidgets on the same tiny transformers.

The reference (``tests/data/comfy_families/``, see its README) is the node's own ``KSamplerSeq``
(WASasquatch/WAS_Extras) run in ComfyUI a125cd8 on ComfyUI's model classes for these families,
loaded with the stand-ins' weights, conditioned on the embeddings seqwidgets encodes. Each loop's
latent must be ComfyUI's: this proves each family's timestep, sign, packing, text inputs, model
sampling and latent normalisation end to end, with CFG and an ancestral sampler.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import pytest
import torch
from diffusers.configuration_utils import FrozenDict
from safetensors import safe_open

import seqwidgets as sw
from seqwidgets.conditioning import PromptEncoder
from seqwidgets.families import detect_family, latent_format
from seqwidgets.testing import tiny_chroma_pipeline, tiny_pipeline

FIXTURE = Path(__file__).parent / "data" / "comfy_families" / "comfyui_a125cd8_families.safetensors"
PROMPTS = {"cond": "a red circle", "uncond": "blurry"}
# Relative L2 per loop; the runs match to about 1e-6 (Lumina 2's q/k RMS-norm eps differs).
TOLERANCE = 1e-4


def _load() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(FIXTURE, "pt") as f:
        names = f.keys()  # (a safe_open handle is not iterable)
        return {key: f.get_tensor(key) for key in names}, f.metadata()


TENSORS, META = _load()
FAMILIES = json.loads(META["families"])
SETTINGS = json.loads(META["settings"])


def stand_in(family: str):
    """The stand-in the reference was recorded on: ``tiny_pipeline(family)``; Chroma with 28
    double and 2 single blocks, the depth whose modulation rows ComfyUI's Chroma hard-codes."""
    if family == "chroma":
        torch.manual_seed(0)
        return tiny_chroma_pipeline(layers=(28, 2))
    return tiny_pipeline(family)


def weights_sha256(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    state = module.state_dict()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def params(sampler: str) -> sw.SequenceParams:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sw.SequenceParams(
            positive_seq=f"0: {PROMPTS['cond']}",
            negative_seq=f"0: {PROMPTS['uncond']}",
            seed=SETTINGS["seed"],
            seed_mode_seq=SETTINGS["seed_mode_seq"],
            alternate_values=SETTINGS["alternate_values"],
            steps=SETTINGS["steps"],
            cfg=SETTINGS["cfg"],
            sampler_name=sampler,
            scheduler=SETTINGS["scheduler"],
            sequence_loop_count=SETTINGS["sequence_loop_count"],
            denoise_start=SETTINGS["denoise_start"],
            denoise_seq=SETTINGS["denoise_seq"],
        )


@pytest.fixture(scope="module")
def pipes():
    return {family: stand_in(family) for family in FAMILIES}


def test_the_reference_covers_the_four_families_with_cfg_and_an_ancestral_sampler():
    assert FAMILIES == ["qwen-image", "chroma", "hidream", "lumina2"]
    assert SETTINGS["cfg"] > 1 and "euler_ancestral" in SETTINGS["samplers"]
    assert META["comfyui_commit"].startswith("a125cd8")


@pytest.mark.parametrize("family", FAMILIES)
def test_the_stand_in_and_its_prompts_are_the_recorded_ones(pipes, family):
    # The reference holds for these weights and these encodings only.
    pipe = pipes[family]
    assert detect_family(pipe).name == family
    assert weights_sha256(pipe.transformer) == META[f"{family}/transformer_sha256"]
    encoder = PromptEncoder(pipe)
    for side, prompt in PROMPTS.items():
        encoded = encoder.encode(prompt)
        torch.testing.assert_close(encoded.embeds, TENSORS[f"{family}/{side}/embeds"])
        if encoded.pooled is not None:
            torch.testing.assert_close(encoded.pooled, TENSORS[f"{family}/{side}/pooled"])


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral"])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_loop_equals_the_node_in_comfyui(pipes, family, sampler):
    pipe = pipes[family]
    frames = list(sw.SequenceSampler(pipe).frames(params(sampler)))
    assert [f.seed for f in frames] == json.loads(META[f"{family}/{sampler}/seeds"])
    fmt = latent_format(pipe.vae)
    # ComfyUI's LATENT is the VAE's raw latent (Qwen-Image's with its frame axis); "model" is
    # the same after ComfyUI's process_latent_in, the space seqwidgets samples in.
    comfy_latent = TENSORS[f"{family}/{sampler}/latent"].reshape(len(frames), 16, 8, 8)
    comfy_model = TENSORS[f"{family}/{sampler}/model"].reshape(len(frames), 16, 8, 8)
    for loop, frame in enumerate(frames):
        model = frame.latent.float()[None]
        assert relative_l2(model, comfy_model[loop : loop + 1]) <= TOLERANCE, f"loop {loop}"
        raw = fmt.process_out(model)
        assert relative_l2(raw, comfy_latent[loop : loop + 1]) <= TOLERANCE, f"loop {loop}"


def _largest_loop_error(pipe, family: str, space: str) -> float:
    frames = list(sw.SequenceSampler(pipe).frames(params("euler")))
    comfy = TENSORS[f"{family}/euler/{space}"].reshape(len(frames), 16, 8, 8)
    fmt = latent_format(pipe.vae)
    ours = [f.latent.float()[None] for f in frames]
    if space == "latent":
        ours = [fmt.process_out(x) for x in ours]
    return max(relative_l2(x, comfy[i : i + 1]) for i, x in enumerate(ours))


def test_a_broken_convention_is_caught(pipes, monkeypatch):
    # The reference tells conventions apart: HiDream's velocity not negated, or Qwen-Image's
    # Wan 2.1 per-channel normalisation left out of the LATENT, is far outside the tolerance.
    hidream = type(detect_family(pipes["hidream"]))
    forward = hidream.forward
    monkeypatch.setattr(hidream, "forward", lambda self, *a: -forward(self, *a))
    assert _largest_loop_error(pipes["hidream"], "hidream", "model") > 0.5
    monkeypatch.undo()
    qwen = pipes["qwen-image"]
    config = {**qwen.vae.config, "latents_mean": None, "latents_std": None}
    monkeypatch.setattr(qwen.vae, "_internal_dict", FrozenDict(config))
    assert _largest_loop_error(qwen, "qwen-image", "latent") > 0.1


@pytest.mark.parametrize("layers", [(0, 1), (1,), (1.5, 2)])
def test_the_tiny_chroma_refuses_a_depth_it_cannot_build(layers):
    with pytest.raises(ValueError, match="layers must be"):
        tiny_chroma_pipeline(layers=layers)
