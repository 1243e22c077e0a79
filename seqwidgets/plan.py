"""The plan of a sequence run, computed without a model: seeds, prompts, denoise and sigmas per loop.

Everything the engine does per loop that does not need the model is decided here, so it can be
printed, plotted and tested: the node's seed progression (`seed_sequence`), which prompts make up
each loop's conditioning (`prompt_chains`), and the denoise and sigma slice of each loop
(`plan_sequence`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from seqwidgets.choices import KEYFRAME_INTERPOLATIONS
from seqwidgets.keyframes import keyframe_at

if TYPE_CHECKING:
    import torch

    from seqwidgets.params import SequenceParams

__all__ = ["LoopPlan", "PromptChain", "plan_sequence", "prompt_chains", "seed_sequence"]

_SEED_SPACE = 2**64

#: A loop's conditioning as a recipe: the first item is ``(prompt, 1.0)``; each following
#: ``(prompt, t)`` means ``cond = slerp(t, cond, encode(prompt))``.
PromptChain = tuple[tuple[str, float], ...]


def seed_sequence(params: SequenceParams) -> list[int]:
    """The seed of every loop, as the KSampler Sequence node computes it.

    The node's rules, reproduced exactly:

    * loop 0 uses ``seed``; a loop ``i > 0`` applies ``seed_mode_seq`` to loop ``i-1``'s seed
      (``increment`` +1, ``decrement`` -1, ``random`` a fresh draw, ``fixed`` unchanged);
    * with ``alternate_values``, every even loop (loop 0 included) instead takes the node's
      "alternate seed" (``fixed`` mode: the base seed). The node keeps a ``previous`` and a
      ``current`` seed, both starting at the base seed, and calls ``update_alternate_seed`` with
      the *base seed* where a loop count was meant. So the branch it takes never changes within a
      run: when ``seed % 3 != 0`` every even loop gets the base seed back; when ``seed % 3 == 0``
      each even loop does ``previous, current = current, previous + 1`` (``- 1`` when
      ``seed // 2`` is odd), whatever ``seed_mode_seq`` says, and uses ``current``.

    Two deliberate deviations:

    * ``random`` draws from ``random.Random(seed)`` (the node uses the global `random` module), so
      a run is reproducible from its base seed;
    * all arithmetic wraps modulo ``2**64`` (decrement from 0 gives ``2**64 - 1``). torch seeds a
      generator with a negative seed ``s`` exactly as with ``s + 2**64``, so the noise is the
      node's; only the printed value differs.

    Args:
        params (`SequenceParams`): reads ``seed``, ``seed_mode_seq``, ``alternate_values`` and
            ``sequence_loop_count``.

    Returns:
        `list[int]`: one seed in ``[0, 2**64)`` per loop.
    """
    base = params.seed
    mode = params.seed_mode_seq
    rng = random.Random(base)
    previous = current = base  # the node's initialize_seeds(seed)
    seeds: list[int] = []
    seed = base
    for loop in range(params.sequence_loop_count):
        if params.alternate_values and loop % 2 == 0:
            if mode == "fixed":
                seed = base
            else:
                # update_alternate_seed(base): the test is on the base seed, never on the loop.
                if base % 3 == 0:
                    step = 1 if base // 2 % 2 == 0 else -1
                    previous, current = current, (previous + step) % _SEED_SPACE
                seed = current
        elif loop == 0:
            seed = base
        elif mode == "increment":
            seed = (seed + 1) % _SEED_SPACE
        elif mode == "decrement":
            seed = (seed - 1) % _SEED_SPACE
        elif mode == "random":
            seed = rng.randint(0, _SEED_SPACE - 1)
        seeds.append(seed)
    return seeds


def prompt_chains(
    keyframes: Sequence[tuple[int, str]],
    loop_count: int,
    *,
    slerp_strength: float | None = None,
    interpolation: str = "none",
) -> list[PromptChain]:
    """The `PromptChain` of each loop for one side (positive or negative).

    Args:
        keyframes (`Sequence[tuple[int, str]]`): ``(index, prompt)`` with a keyframe at 0, as
            `seqwidgets.keyframes.parse_keyframes` returns.
        loop_count (`int`): number of loops.
        slerp_strength (`float`, *optional*): the node's ``use_conditioning_slerp`` with this
            ``cond_slerp_strength``. From loop 1 on the node uses
            ``used(i) = slerp(s, used(i-1), scheduled(i))``, where ``scheduled(i)`` is the keyframe
            starting at ``i``, else ``used(i-1)``. Since ``slerp(t, a, a) == a``, only keyframe
            loops change anything: each appends ``(prompt, s)`` to the previous loop's chain and
            the result then holds until the next keyframe (an exponential ease, which never quite
            arrives for ``s < 1``). ``s == 0`` leaves the chain as it is and ``s == 1`` restarts
            it at the keyframe, both exactly what the slerp gives.
        interpolation (`str`, defaults to ``"none"``): ``"none"``: loop ``i`` uses the keyframe
            starting at ``i``, else the one loop ``i-1`` used. ``"linear"`` / ``"ease"``: a loop
            strictly between keyframes ``k_a < i < k_b`` uses ``((prompt_a, 1.0), (prompt_b, w))``
            with ``w = (i - k_a) / (k_b - k_a)`` (eased: ``(1 - cos(pi * w)) / 2``); a keyframe
            loop, and every loop after the last keyframe, uses that keyframe alone, so the
            conditioning arrives exactly at each keyframe. Excludes ``slerp_strength``.

    Returns:
        `list[PromptChain]`: ``loop_count`` chains.
    """
    if interpolation not in KEYFRAME_INTERPOLATIONS:
        allowed = ", ".join(repr(name) for name in KEYFRAME_INTERPOLATIONS)
        raise ValueError(f"interpolation: {interpolation!r} is unknown; allowed: {allowed}")
    if slerp_strength is not None and interpolation != "none":
        raise ValueError("slerp_strength and interpolation='linear'/'ease' exclude each other")
    ordered = sorted(keyframes)
    starts = dict(ordered)
    chains: list[PromptChain] = []

    if slerp_strength is not None:
        s = float(slerp_strength)
        chain: PromptChain = ((keyframe_at(ordered, 0), 1.0),)
        for loop in range(loop_count):
            if loop > 0 and loop in starts:
                if s == 1.0:
                    chain = ((starts[loop], 1.0),)
                elif s != 0.0:
                    chain = (*chain, (starts[loop], s))
            chains.append(chain)
        return chains

    indices = [index for index, _ in ordered]
    position = -1  # position in `ordered` of the last keyframe at or before the loop
    for loop in range(loop_count):
        while position + 1 < len(ordered) and indices[position + 1] <= loop:
            position += 1
        if position < 0:
            raise ValueError(f"no keyframe at or before loop {loop}")
        k_a, prompt_a = ordered[position]
        has_next = position + 1 < len(ordered)
        if interpolation == "none" or loop == k_a or not has_next:
            chains.append(((prompt_a, 1.0),))
            continue
        k_b, prompt_b = ordered[position + 1]
        w = (loop - k_a) / (k_b - k_a)
        if interpolation == "ease":
            w = (1.0 - math.cos(math.pi * w)) / 2.0
        chains.append(((prompt_a, 1.0), (prompt_b, w)))
    return chains


@dataclass(frozen=True)
class LoopPlan:
    """What one loop will do.

    Attributes:
        index (`int`): the loop number, from 0.
        seed (`int`): the noise seed, in ``[0, 2**64)``.
        positive (`PromptChain`): how to build the positive conditioning.
        negative (`PromptChain`): how to build the negative conditioning.
        denoise (`float`): ``denoise_start`` for loop 0, ``denoise_seq`` after.
        sigmas (`torch.Tensor`, *optional*): the loop's sigma slice (``steps + 1`` values, the
            last 0), or ``None`` when planned without a model. Loops with the same denoise share
            one tensor: treat it as read-only. Not part of equality.
        is_keyframe (`bool`): a positive or negative keyframe starts at this loop.
    """

    index: int
    seed: int
    positive: PromptChain
    negative: PromptChain
    denoise: float
    sigmas: torch.Tensor | None = field(default=None, compare=False)
    is_keyframe: bool = False

    @property
    def steps(self) -> int:
        """Number of model steps: ``len(sigmas) - 1``; 0 without sigmas or when denoise is 0."""
        if self.sigmas is None or len(self.sigmas) == 0:
            return 0
        return len(self.sigmas) - 1


def plan_sequence(params: SequenceParams, pipe: Any = None) -> list[LoopPlan]:
    """Plan every loop of a run.

    Args:
        params (`SequenceParams`): the run's settings.
        pipe (*optional*): a diffusers pipeline, scheduler or `seqwidgets.schedules.ModelSampling`;
            with one, each loop's ``sigmas`` is filled with ComfyUI's sigma slice for its denoise
            (computed once per distinct denoise). Without one, ``sigmas`` is ``None``.

    Returns:
        `list[LoopPlan]`: one plan per loop.
    """
    n = params.sequence_loop_count
    seeds = seed_sequence(params)
    slerp_strength = params.cond_slerp_strength if params.use_conditioning_slerp else None
    chains = [
        prompt_chains(
            keyframes,
            n,
            slerp_strength=slerp_strength,
            interpolation=params.keyframe_interpolation,
        )
        for keyframes in (params.positive_keyframes, params.negative_keyframes)
    ]
    starts = {index for index, _ in params.positive_keyframes + params.negative_keyframes}

    sigmas_by_denoise: dict[float, torch.Tensor | None] = {}
    model_sampling = _model_sampling(pipe) if pipe is not None else None

    def sigmas_for(denoise: float) -> torch.Tensor | None:
        if model_sampling is None:
            return None
        if denoise not in sigmas_by_denoise:
            from seqwidgets.schedules import loop_sigmas

            sigmas_by_denoise[denoise] = loop_sigmas(
                model_sampling, params.scheduler, params.sampler_name, params.steps, denoise
            )
        return sigmas_by_denoise[denoise]

    plans = []
    for i in range(n):
        denoise = params.denoise_start if i == 0 else params.denoise_seq
        plans.append(
            LoopPlan(
                index=i,
                seed=seeds[i],
                positive=chains[0][i],
                negative=chains[1][i],
                denoise=denoise,
                sigmas=sigmas_for(denoise),
                is_keyframe=i in starts,
            )
        )
    return plans


def _model_sampling(pipe: Any) -> Any:
    from seqwidgets.schedules import ModelSampling

    if isinstance(pipe, ModelSampling):
        return pipe
    return ModelSampling.from_pipeline(pipe)
