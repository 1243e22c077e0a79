"""Prompt encodings: one text-encoder call per distinct prompt, slerp chains on top.

A run of 1,000 loops over three keyframe prompts encodes three prompts, not 1,000: encodings are
cached by their text. A loop's conditioning is described by a *prompt chain* (see
:mod:`seqwidgets.plan`): the first prompt's encoding, slerped towards each following prompt by
its weight. Chains are cached too, so an interpolated transition costs one slerp per loop.

Encoding follows ComfyUI's CLIP Text Encode: every prompt, the empty one included, goes through
the text encoder (no zeroed "empty" prompt, even where an SDXL config asks for it). Each family
encodes with its pipeline's own ``encode_prompt`` (`seqwidgets.families`): SD one CLIP; SDXL two
CLIPs and a pooled embedding; SD3 two CLIPs and T5 (optional); Flux CLIP pooled and T5.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass

import torch

from .families import detect_family
from .interp import slerp
from .offload import bring_back_text_encoders


@dataclass(frozen=True)
class Conditioning:
    """What the UNet is conditioned on for one prompt side.

    Attributes:
        embeds: token embeddings ``[1, tokens, dim]``.
        pooled: the pooled text embedding ``[1, dim]`` (SDXL, SD3, Flux); ``None`` for SD
            1.x/2.x.
        mask: ``[1, tokens]``, 1 where a token is read, for families whose prompts are padded
            (Chroma, Lumina 2) or of varying length (Z-Image, Qwen-Image); ``None`` = all read.
    """

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    @staticmethod
    def cat(items: list[Conditioning]) -> Conditioning:
        """Stack conditionings along the batch dimension (one per latent of a batch)."""
        pooled = None
        if items[0].pooled is not None:
            pooled = torch.cat([item.pooled for item in items])
        tokens = max(item.embeds.shape[1] for item in items)
        if all(item.mask is None and item.embeds.shape[1] == tokens for item in items):
            return Conditioning(torch.cat([item.embeds for item in items]), pooled)
        # Prompts of different lengths: pad with unread tokens, so each item reads its own.
        padded = [item.padded(tokens) for item in items]
        embeds = torch.cat([item.embeds for item in padded])
        return Conditioning(embeds, pooled, torch.cat([item.mask for item in padded]))

    def padded(self, tokens: int) -> Conditioning:
        """This conditioning with ``tokens`` tokens: zeros appended, the mask saying so."""
        embeds, mask = self.embeds, self.mask
        if mask is None:
            mask = torch.ones(embeds.shape[:2], device=embeds.device)
        extra = tokens - embeds.shape[1]
        if extra > 0:
            embeds = torch.cat(
                [embeds, embeds.new_zeros(embeds.shape[0], extra, embeds.shape[2])], 1
            )
            mask = torch.cat([mask, mask.new_zeros(mask.shape[0], extra)], 1)
        return Conditioning(embeds, self.pooled, mask)

    def slerp_to(self, other: Conditioning, t: float) -> Conditioning:
        """Slerp every part towards ``other`` by ``t`` (the node slerps the pooled output too)."""
        pooled = None
        if self.pooled is not None and other.pooled is not None:
            pooled = slerp(t, self.pooled, other.pooled)
        if self.mask is None and other.mask is None and self.embeds.shape == other.embeds.shape:
            return Conditioning(slerp(t, self.embeds, other.embeds), pooled)
        # Padded prompts: every token either side reads is read (a zero pad slerps as a vector
        # with no direction, see `slerp`).
        tokens = max(self.embeds.shape[1], other.embeds.shape[1])
        a, b = self.padded(tokens), other.padded(tokens)
        return Conditioning(slerp(t, a.embeds, b.embeds), pooled, torch.maximum(a.mask, b.mask))


class PromptEncoder:
    """Encodes prompts with a pipeline's text encoder(s), once per distinct text.

    Encodings are kept until `keep_only` drops them; folded chains only for the last
    `CHAINS_KEPT` used, since an interpolated run makes a new chain every loop and a slerp is
    cheap to redo.

    Args:
        pipe: a diffusers pipeline of one of `seqwidgets.families.FAMILIES`.
        device: where the encodings live (default: the denoising network's device).
        max_sequence_length: text tokens for the families whose pipelines take it (T5, Gemma,
            Qwen, Llama, Mistral; default the family's, as diffusers': 256 for SD3, Flux
            schnell and Lumina 2, 512 for Flux dev, Chroma, Flux.2, Qwen-Image and Z-Image, 128
            for HiDream). A prompt longer than its encoder reads is announced once, with
            the encoder and its limit (`seqwidgets.families.TokenLimit`).

    Example:
        >>> from seqwidgets.testing import tiny_pipeline
        >>> encoder = PromptEncoder(tiny_pipeline())
        >>> a = encoder.encode("a red circle"); b = encoder.encode("a red circle")
        >>> a is b, encoder.encoded
        (True, 1)
        >>> encoder.keep_only({"a blue square"}), encoder.cached_prompts
        (1, [])
    """

    #: Folded prompt chains kept, the least recently used dropped first.
    CHAINS_KEPT = 64

    def __init__(
        self,
        pipe,
        device: torch.device | str | None = None,
        max_sequence_length: int | None = None,
    ):
        self.pipe = pipe
        self.family = detect_family(pipe)
        network = self.family.denoiser_network(pipe)
        self.device = torch.device(device) if device is not None else network.device
        if max_sequence_length is None:
            max_sequence_length = self.family.max_sequence_length
        self.max_sequence_length = int(max_sequence_length)
        self.encoded = 0  # distinct prompts sent through the text encoder(s)
        self._prompts: dict[str, Conditioning] = {}
        self._chains: OrderedDict[tuple, Conditioning] = OrderedDict()

    @torch.no_grad()
    def encode(self, prompt: str) -> Conditioning:
        """The conditioning for one prompt text, from the cache when it was seen before."""
        cached = self._prompts.get(prompt)
        if cached is not None:
            return cached
        self._warn_if_truncated(prompt)
        bring_back_text_encoders(self.pipe)  # parked on the CPU between prompts (offload.py)
        embeds, pooled, mask = self.family.encode_prompt(
            self.pipe, prompt, self.device, self.max_sequence_length
        )
        conditioning = Conditioning(
            embeds.float().to(self.device),
            None if pooled is None else pooled.float().to(self.device),
            None if mask is None else mask.float().to(self.device),
        )
        self.encoded += 1
        self._prompts[prompt] = conditioning
        return conditioning

    @property
    def cached_prompts(self) -> list[str]:
        """The prompt texts whose encodings are held, in the order they were encoded."""
        return list(self._prompts)

    def keep_only(self, prompts: Collection[str]) -> int:
        """Forget every encoding of a prompt not in ``prompts``, and the chains that use one;
        return how many encodings were freed. The session calls this when branches are deleted,
        so the cache holds what the remaining branches may use, not every prompt ever seen.
        """
        keep = set(prompts)
        freed = sum(1 for prompt in self._prompts if prompt not in keep)
        # New dicts, swapped in whole: a run on another thread never sees one half-filtered.
        self._prompts = {p: c for p, c in self._prompts.items() if p in keep}
        self._chains = OrderedDict(
            (chain, c) for chain, c in self._chains.items() if all(p in keep for p, _ in chain)
        )
        return freed

    def _warn_if_truncated(self, prompt: str) -> None:
        """Say so when a text encoder whose tokens the network reads cuts the prompt (once per
        prompt): the family's `TokenLimit` s, at this encoder's ``max_sequence_length``."""
        for limit in self.family.token_limits:
            cut = limit.cut(self.pipe, prompt, self.max_sequence_length)
            if cut is None:
                continue
            tokens, read, dropped = cut
            source = "max_sequence_length" if limit.by != "tokenizer" else "its tokenizer's limit"
            warnings.warn(
                f"prompt is {tokens} tokens; the text encoder reads only the first {read} "
                f"({limit.encoder}, {source}; with its start, end and template tokens), so it "
                f"does not see: {dropped!r}",
                UserWarning,
                stacklevel=3,
            )

    def chain(self, chain: tuple[tuple[str, float], ...]) -> Conditioning:
        """Fold a prompt chain: start at the first prompt, slerp towards each next by its weight."""
        chains = self._chains
        cached = chains.get(chain)
        if cached is not None:
            chains.move_to_end(chain)
            return cached
        (first, _), *rest = chain
        conditioning = self.encode(first)
        for prompt, t in rest:
            conditioning = conditioning.slerp_to(self.encode(prompt), t)
        chains[chain] = conditioning
        while len(chains) > self.CHAINS_KEPT:
            chains.popitem(last=False)
        return conditioning
