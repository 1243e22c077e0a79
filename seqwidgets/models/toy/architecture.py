"""The toy model's parts, built from diffusers' and transformers' own classes at toy size.

The tokenizer's vocabulary is written here: word-level BPE for the grammar's words (each word one
token, built by a chain of merges from its letters), single letters for anything else, and CLIP's
special tokens. Everything else is a stock config, scaled down: a real SD 1.5 code path.
"""

from __future__ import annotations

import json
from pathlib import Path

from .vocab import WORDS

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 32  # SD uses 77; the grammar's longest caption is 9 tokens with BOS and EOS
TEXT_DIM = 64

#: SD 1.5's scheduler config (runwayml/stable-diffusion-v1-5, scheduler/scheduler_config.json:
#: the same betas, steps and offsets), with the class DDIM instead of SD 1.5's PNDM: PNDM's
#: 4th-order extrapolation of the noise predictions drifts off-color above CFG ~3 with this tiny
#: model (run 1: color accuracy 27% at CFG 7.5), where DDIM and Euler stay at 100%.
SCHEDULER_CONFIG = {
    "_class_name": "DDIMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
}


def _bpe(word: str, merges: list[str]) -> list[str]:
    """CLIP's BPE of one word under ``merges`` (lowest rank first), as the tokenizer runs it."""
    pieces = list(word[:-1]) + [word[-1] + "</w>"]
    ranks = {tuple(m.split(" ")): i for i, m in enumerate(merges)}
    while len(pieces) > 1:
        pairs = [
            (ranks.get(pair, len(ranks)), i)
            for i, pair in enumerate(zip(pieces, pieces[1:], strict=False))
        ]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        pieces[i : i + 2] = [pieces[i] + pieces[i + 1]]
    return pieces


def tokenizer_files() -> tuple[dict[str, int], list[str]]:
    """The vocabulary (token -> id) and BPE merges of the toy tokenizer.

    Letters come first (bare and word-final, as CLIP's byte-level BPE spells them: ``"a"`` and
    ``"a</w>"``), then the pieces of each grammar word's merges (``"r e"``, ``"re d</w>"``), then
    the special tokens last, as in CLIP. Every grammar word is exactly one token.
    """
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    punct = [",", ".", "!", "?", "-", "'"]
    vocab: list[str] = []
    for ch in letters + punct:
        vocab += [ch, ch + "</w>"]
    merges: list[str] = []
    for word in WORDS:
        # Add merges until the word is one token. BPE applies the lowest-ranked merge first,
        # whatever the word, so merges learnt for earlier words ("r e" from "red") cut later
        # words ("g r e e n" -> "g re e n"): simulate them, then join what is left, pair by pair.
        while len(pieces := _bpe(word, merges)) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            if pieces[0] + pieces[1] not in vocab:
                vocab.append(pieces[0] + pieces[1])
    vocab += [BOS, EOS]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def write_tokenizer(folder: str | Path):
    """Write ``vocab.json``, ``merges.txt`` and the tokenizer configs; return the loaded tokenizer."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = tokenizer_files()
    (folder / "vocab.json").write_text(json.dumps(vocab, indent=1) + "\n")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = CLIPTokenizer(
        vocab=vocab,
        merges=[tuple(m.split(" ")) for m in merges],
        model_max_length=MAX_LENGTH,
        pad_token=EOS,
        unk_token=EOS,
    )
    tok.save_pretrained(folder)
    return CLIPTokenizer.from_pretrained(folder)


def make_text_encoder(vocab_size: int, bos_id: int, eos_id: int):
    """A 3-layer, 64-wide ``CLIPTextModel`` (SD 1.5's: 12 layers, 768 wide)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_DIM,
        intermediate_size=TEXT_DIM * 4,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH,
        hidden_act="quick_gelu",
        projection_dim=TEXT_DIM,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    return CLIPTextModel(config)


def make_unet():
    """A ``UNet2DConditionModel`` on 4x8x8 latents: 32/64/64 channels, cross-attention at 8x8 and 4x4."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64, 64),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=4,
        norm_num_groups=16,
    )


def make_vae():
    """An ``AutoencoderKL`` with SD's 8x downscale (4 blocks, 3 downsamples): 64x64x3 -> 4x8x8."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=1.0,  # fitted after training: 1 / std of the latents
        force_upcast=False,
    )


def make_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(SCHEDULER_CONFIG)
