"""Figures that explain a sequence run: what a teacher would draw on the board.

Every function returns a `matplotlib.figure.Figure` built without pyplot, so it works under any
backend (Agg included), leaks no global figure state and never calls ``plt.show()``. In Jupyter a
figure displays as a cell's last expression; in a script, save it::

    import seqwidgets as sw
    from seqwidgets import plots

    params = sw.SequenceParams(steps=10, sequence_loop_count=6, denoise_seq=0.5)
    plots.plot_sigma_slices(params).savefig("sigmas.png")

Everything is computed by the same code a run uses (`seqwidgets.plan`, `seqwidgets.schedules`,
`seqwidgets.interp`), so a figure shows what the sampler does, not a re-derivation of it.

* `plot_sigma_slices`: the noise levels each loop walks (``denoise_start`` / ``denoise_seq``).
* `plot_schedulers`: ComfyUI's schedulers side by side.
* `plot_seed_sequence`: the seed of every loop per ``seed_mode_seq`` and ``alternate_values``.
* `plot_keyframe_weights`: how much of each keyframe prompt every loop's conditioning holds.
* `plot_drift`: how far each loop moves from the one before (L2 distance, cosine similarity).
* `drift_figure`: a per-loop measure (colour drift from loop 0...) for several runs, e.g. the
  colour coherence modes.
* `plot_interpolation_norms`: why slerp keeps a latent's norm and lerp does not.
* `plot_contact_sheet`: a grid of captioned images (a branch, a run, the steps of one loop).
* `plot_timelines`: several runs or branches side by side, one labelled row each.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from seqwidgets import interp
from seqwidgets.choices import SCHEDULERS
from seqwidgets.plan import LoopPlan, PromptChain, plan_sequence, seed_sequence
from seqwidgets.schedules import ModelSampling, calculate_sigmas, loop_sigmas

if TYPE_CHECKING:
    from PIL import Image

    from seqwidgets.frames import Frame
    from seqwidgets.params import SequenceParams

__all__ = [
    "SD15_SCHEDULE",
    "chain_weights",
    "drift_figure",
    "latent_drift",
    "plot_contact_sheet",
    "plot_drift",
    "plot_interpolation_norms",
    "plot_keyframe_weights",
    "plot_schedulers",
    "plot_seed_sequence",
    "plot_sigma_slices",
    "plot_timelines",
]

#: The scheduler config of Stable Diffusion 1.5 (and of the toy model): the noise schedule used
#: when a figure is asked for without a model.
SD15_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}

_SEED_SPACE = 2**64
_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)
_LOOP0 = "#d62728"  # loop 0 (denoise_start) in every figure
_LOOPS = "#1f77b4"  # loops 1+ (denoise_seq)
_MUTED = "#9a9a9a"


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


class _Figure(Figure):
    """A `Figure` that Jupyter displays by itself.

    A figure made without pyplot has no display hook until ``%matplotlib inline`` runs; this
    ``_repr_png_`` lets it show as a cell's last expression in any notebook front end (Jupyter,
    Colab, VS Code). Where the inline backend is on, its own formatter takes precedence.
    """

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png")
        return buffer.getvalue()


def _figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], **subplot_kw: Any):
    """A constrained-layout Figure and a flat list of its axes, in one clean style."""
    fig = _Figure(figsize=figsize, layout="constrained", dpi=100)
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw).ravel().tolist()
    for ax in axes:
        _style(ax)
    return fig, axes


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(True, color="#e6e6e6", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=9)


def _model_sampling(source: Any) -> ModelSampling:
    """A `ModelSampling` from a pipeline, scheduler, ModelSampling or ``None`` (SD 1.5's)."""
    if source is None:
        return ModelSampling.from_config(SD15_SCHEDULE)
    return ModelSampling.from_pipeline(source)


def _as_list(params: SequenceParams | Sequence[SequenceParams]) -> list[SequenceParams]:
    if isinstance(params, Sequence) and not isinstance(params, (str, bytes)):
        items = list(params)
    else:
        items = [params]
    if not items:
        raise ValueError("expected at least one SequenceParams, got an empty sequence")
    return items


def _integer_loops(ax, count: int) -> None:
    """Integer ticks on a loop axis, at most ~12 of them."""
    step = max(1, math.ceil(count / 12))
    ax.set_xticks(range(0, count, step))
    ax.set_xlim(-0.5, count - 0.5)


def _shorten(text: str, width: int = 34) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# ------------------------------------------------------------------------------------------------
# 1. noise schedules
# ------------------------------------------------------------------------------------------------


def plot_sigma_slices(
    params: SequenceParams,
    pipe_or_model_sampling: Any = None,
    *,
    max_loops: int = 8,
) -> Figure:
    """The noise levels each loop of a run walks through.

    Left: the model's noise curve (sigma at every training timestep) with the sigmas loop 0 runs
    (``denoise_start``) and those every later loop runs (``denoise_seq``). Both have ``steps``
    points, since ComfyUI's denoise keeps the number of steps: a loop at denoise ``d`` runs the
    last ``steps`` of an ``int(steps / d)``-step schedule, so it starts lower and steps finer.
    Right: the whole run as one saw-tooth, one tooth per loop: each loop adds noise up to its
    first sigma (dotted) and walks down to 0 (at most ``max_loops`` loops drawn).

    Args:
        params (`SequenceParams`): reads ``steps``, ``scheduler``, ``sampler_name``,
            ``denoise_start``, ``denoise_seq`` and ``sequence_loop_count``.
        pipe_or_model_sampling (*optional*): a diffusers pipeline or scheduler, or a
            `seqwidgets.schedules.ModelSampling`; defaults to Stable Diffusion 1.5's schedule
            (which the toy model shares).
        max_loops (`int`, defaults to 8): loops drawn in the saw-tooth panel.

    Returns:
        `Figure`: two axes; the right one holds one solid line per loop drawn, labelled
        ``"loop <i>"``, with the loop's sigmas (`LoopPlan.sigmas`) as y-data, and dotted
        connectors between them.

    Example:
        >>> import seqwidgets as sw
        >>> params = sw.SequenceParams(steps=10, sequence_loop_count=4, positive_seq="0: a cat")
        >>> fig = plot_sigma_slices(params)
        >>> len(fig.axes)
        2
    """
    ms = _model_sampling(pipe_or_model_sampling)
    plans = plan_sequence(params, ms)
    fig, (curve, run) = _figure(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1, 1.35]})
    _draw_noise_curve(curve, params, ms)
    _draw_sawtooth(run, plans, max_loops)
    fig.suptitle("Where each loop starts and ends on the noise schedule", fontsize=13)
    return fig


def _draw_noise_curve(curve, params: SequenceParams, ms: ModelSampling) -> None:
    """The left panel: the model's sigma(t) curve and where the two slices sit on it."""
    timesteps = np.arange(ms.num_timesteps)
    curve.plot(timesteps, ms.sigmas.numpy(), color=_MUTED, lw=1.5, label="model noise curve")
    groups = [(params.denoise_start, "loop 0", _LOOP0, "o")]
    if params.sequence_loop_count > 1:
        groups.append((params.denoise_seq, "loops 1+", _LOOPS, "s"))
    for denoise, who, color, marker in groups:
        sigmas = loop_sigmas(ms, params.scheduler, params.sampler_name, params.steps, denoise)
        steps_run = sigmas[:-1]  # the last sigma (0) is where a loop ends, not a model call
        if len(steps_run) == 0:
            continue
        t = ms.timestep(steps_run).numpy()
        label = f"{who}: denoise {denoise:g}, starts at sigma {float(steps_run[0]):.2f}"
        curve.plot(t, steps_run.numpy(), marker, color=color, ms=5, alpha=0.85, label=label)
    curve.set_yscale("log")
    curve.set_xlim(ms.num_timesteps + 20, -20)  # noisy on the left: sampling reads left to right
    curve.set_xlabel("training timestep the UNet sees")
    curve.set_ylabel("sigma (noise level, log scale)")
    curve.set_title(f"{params.steps} steps per loop, {params.scheduler} scheduler", fontsize=11)
    curve.legend(fontsize=8.5, frameon=False, loc="upper right")


def _draw_sawtooth(run, plans: Sequence[LoopPlan], max_loops: int) -> None:
    """The right panel: the saw-tooth of the run, one tooth per loop (``max_loops`` at most)."""
    offset = 0
    shown = plans[:max_loops]
    previous_end: tuple[float, float] | None = None
    for plan in shown:
        sigmas = plan.sigmas.numpy() if plan.sigmas is not None else np.zeros(0)
        x = offset + np.arange(len(sigmas))
        color = _LOOP0 if plan.index == 0 else _LOOPS
        if previous_end is not None and len(sigmas):
            # Between loops the previous result gets fresh noise up to the next first sigma.
            run.plot(
                [previous_end[0], x[0]], [previous_end[1], sigmas[0]], ":", color=_MUTED, lw=1.2
            )
        run.plot(x, sigmas, "-o", color=color, ms=3, lw=1.4, label=f"loop {plan.index}")
        if len(sigmas):
            run.annotate(
                f"loop {plan.index}",
                (x[0], sigmas[0]),
                textcoords="offset points",
                xytext=(0, 5),
                ha="center",
                fontsize=8,
                color=color,
            )
        if len(sigmas):
            previous_end = (x[-1], sigmas[-1])
        offset += max(len(sigmas), 1)
    run.set_yscale("symlog", linthresh=0.1)
    run.set_ylim(bottom=0)
    run.set_xlabel("model steps, all loops one after another")
    run.set_ylabel("sigma (symlog scale)")
    more = f" (first {len(shown)} of {len(plans)} loops)" if len(plans) > len(shown) else ""
    run.set_title(f"The run: one tooth per loop{more}", fontsize=11)
    run.legend(
        handles=[
            Line2D([], [], color=_LOOP0, marker="o", ms=4, label="loop 0: from the input latent"),
            Line2D([], [], color=_LOOPS, marker="o", ms=4, label="loops 1+: from the last result"),
            Line2D([], [], color=_MUTED, ls=":", label="noise added between loops"),
        ],
        fontsize=8.5,
        frameon=False,
        loc="upper right",
    )


def plot_schedulers(model_sampling: Any = None, steps: int = 20) -> Figure:
    """Every ComfyUI scheduler's sigmas for one model, side by side.

    Args:
        model_sampling (*optional*): a `ModelSampling`, a diffusers pipeline or scheduler;
            defaults to Stable Diffusion 1.5's schedule.
        steps (`int`, defaults to 20): steps of each schedule.

    Returns:
        `Figure`: one axis with one line per scheduler in `seqwidgets.choices.SCHEDULERS`, in
        that order, labelled with its name (plus "(≈ other)" where it coincides with an earlier
        one within 2%); the y-data are the schedule's sigmas without the final 0 (log scale).

    Example:
        >>> fig = plot_schedulers(steps=10)
        >>> len(fig.axes[0].lines)
        9
    """
    ms = _model_sampling(model_sampling)
    fig, (ax,) = _figure(figsize=(8, 4.6))
    markers = "osD^vPX*h"
    drawn: dict[str, np.ndarray] = {}
    for color, marker, name in zip(_COLORS, markers, SCHEDULERS, strict=False):
        sigmas = calculate_sigmas(ms, name, steps)[:-1].numpy()  # drop the final 0 for log scale
        # Say so where one line hides another (e.g. sgm_uniform and simple for SD 1.5).
        twins = [
            other
            for other, values in drawn.items()
            if values.shape == sigmas.shape and np.allclose(values, sigmas, rtol=0.02)
        ]
        drawn[name] = sigmas
        label = f"{name} (≈ {twins[0]})" if twins else name
        ax.plot(
            np.arange(len(sigmas)),
            sigmas,
            "-",
            marker=marker,
            color=color,
            ms=4,
            lw=1.4,
            alpha=0.85,
            mfc="none" if marker in "sD" else color,
            label=label,
        )
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step (the final sigma, 0, is not drawn)")
    ax.set_ylabel("sigma (noise level, log scale)")
    ax.set_title(f"ComfyUI schedulers, {steps} steps: where each spends its steps", fontsize=12)
    ax.legend(
        title="scheduler", fontsize=9, title_fontsize=9, frameon=False, ncols=2, loc="lower left"
    )
    return fig


# ------------------------------------------------------------------------------------------------
# 2. seeds
# ------------------------------------------------------------------------------------------------


def _signed_offset(seed: int, base: int) -> int:
    """``seed - base`` on the 64-bit circle, so that decrement from 0 reads as -1."""
    return (seed - base + 2**63) % _SEED_SPACE - 2**63


def plot_seed_sequence(params: SequenceParams | Sequence[SequenceParams]) -> Figure:
    """The seed of every loop, one panel per settings, with the alternate-values pattern marked.

    Each panel plots ``seed - base seed`` per loop (wrapping on the 64-bit circle, so decrement
    from 0 reads -1); for ``random`` seeds, which fill the 64-bit range, ``seed / 2**64``. With ``alternate_values`` the even loops (the node's "alternate seed") are
    orange squares and the odd ones (``seed_mode_seq``) blue dots: with ``seed % 3 != 0`` the even
    loops keep returning to the base seed; with ``seed % 3 == 0`` they drift by their own rule.
    Small seeds are written on the points.

    Args:
        params (`SequenceParams` or a sequence of them): one panel each, e.g. one per mode.

    Returns:
        `Figure`: one axis per settings; on each, the first line holds every loop's offset
        (``len == sequence_loop_count``), the next lines the even / odd markers.

    Example:
        >>> import seqwidgets as sw
        >>> modes = ["increment", "decrement", "fixed"]
        >>> fig = plot_seed_sequence([sw.SequenceParams(seed=5, seed_mode_seq=m) for m in modes])
        >>> len(fig.axes)
        3
    """
    items = _as_list(params)
    loops = max(p.sequence_loop_count for p in items)
    fig, axes = _figure(len(items), 1, figsize=(9, 1.0 + 1.6 * len(items)), sharex=True)
    for ax, p in zip(axes, items, strict=True):
        seeds = seed_sequence(p)
        small = all(s < 10**6 for s in seeds)
        if small or p.seed_mode_seq != "random":
            offsets = np.array([_signed_offset(s, p.seed) for s in seeds], dtype=float)
            ax.set_ylabel("seed − base", fontsize=9)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
        else:  # random seeds fill the 64-bit range: show where they land in it
            offsets = np.array(seeds, dtype=float) / _SEED_SPACE
            ax.set_ylabel("seed / 2⁶⁴", fontsize=9)
            ax.set_ylim(-0.05, 1.05)
        index = np.arange(len(seeds))
        ax.plot(index, offsets, color="#c8c8c8", lw=1.2, zorder=1)
        if p.alternate_values:
            even = index % 2 == 0
            ax.plot(index[even], offsets[even], "s", color=_COLORS[1], ms=7, zorder=3)
            ax.plot(index[~even], offsets[~even], "o", color=_COLORS[0], ms=7, zorder=3)
        else:
            ax.plot(index, offsets, "o", color=_COLORS[0], ms=7, zorder=3)
        if small and len(seeds) <= 24:
            for i, s in zip(index, seeds, strict=True):
                ax.annotate(
                    str(s),
                    (i, offsets[i]),
                    textcoords="offset points",
                    xytext=(0, 7),
                    ha="center",
                    fontsize=8,
                )
            low, high = offsets.min(), offsets.max()
            ax.set_ylim(low - 1, high + max(1.5, 0.25 * (high - low)))
        alternate = "alternate_values on" if p.alternate_values else "alternate_values off"
        ax.set_title(f"{p.seed_mode_seq}, {alternate}, seed {p.seed}", fontsize=10.5, loc="left")
        _integer_loops(ax, loops)
    axes[-1].set_xlabel("loop")
    if any(p.alternate_values for p in items):
        fig.legend(
            handles=[
                Line2D(
                    [], [], ls="", marker="s", color=_COLORS[1], label="even loop: alternate seed"
                ),
                Line2D(
                    [], [], ls="", marker="o", color=_COLORS[0], label="odd loop: seed_mode_seq"
                ),
            ],
            loc="outside upper right",
            ncols=2,
            fontsize=9,
            frameon=False,
        )
    fig.suptitle("Seed of every loop", fontsize=13, x=0.02, ha="left")
    return fig


# ------------------------------------------------------------------------------------------------
# 3. keyframes
# ------------------------------------------------------------------------------------------------


def chain_weights(chain: PromptChain) -> dict[str, float]:
    """How far a loop's conditioning has moved towards each prompt of its `PromptChain`.

    A chain ``((p0, 1.0), (p1, t1), (p2, t2), ...)`` means ``cond = slerp(t2, slerp(t1, p0, p1),
    p2) ...``. Each interpolation keeps ``1 - t`` of what came before and adds ``t`` of the new
    prompt, so the weights are ``p2: t2``, ``p1: t1 (1 - t2)``, ``p0: (1 - t1)(1 - t2)``. They sum
    to 1 and are the interpolation factors, i.e. the position along the path between the
    prompts (slerp moves along an arc instead of a chord; the position is the same). A prompt
    that appears twice gets the sum of its weights.

    Example:
        >>> chain_weights((("a red circle", 1.0), ("a blue square", 0.5)))
        {'a red circle': 0.5, 'a blue square': 0.5}
    """
    weights: dict[str, float] = {}
    for prompt, t in chain:
        weights = {k: v * (1.0 - t) for k, v in weights.items()}
        weights[prompt] = weights.get(prompt, 0.0) + t
    return weights


def _interpolation_title(p: SequenceParams) -> str:
    if p.use_conditioning_slerp:
        return f"node's conditioning slerp, cond_slerp_strength {p.cond_slerp_strength:g}"
    if p.keyframe_interpolation != "none":
        return f"smooth transition, keyframe_interpolation={p.keyframe_interpolation!r}"
    return "no interpolation: each keyframe is a hard cut"


def plot_keyframe_weights(
    params: SequenceParams | Sequence[SequenceParams], *, side: str = "positive"
) -> Figure:
    """Keyframe timeline: how much of each prompt every loop's conditioning holds.

    The weights come from the run's plan (`plan_sequence`'s prompt chains, see `chain_weights`),
    so this is what the sampler will do. Pass several settings to compare them, e.g. the node's
    ``use_conditioning_slerp`` (an exponential ease that moves ``cond_slerp_strength`` of the way
    at each keyframe loop, then holds: it never fully arrives) against ``keyframe_interpolation``
    ``"linear"`` / ``"ease"`` (which arrive exactly at each keyframe).

    Args:
        params (`SequenceParams` or a sequence of them): one panel each.
        side (`str`, defaults to ``"positive"``): ``"positive"`` or ``"negative"`` prompts.

    Returns:
        `Figure`: one axis per settings; on each, one line per distinct prompt, in keyframe
        order, with one point per loop (the prompt's weight at that loop).

    Example:
        >>> import seqwidgets as sw
        >>> p = sw.SequenceParams(positive_seq="0: a red circle\\n4: a blue square",
        ...     sequence_loop_count=8, keyframe_interpolation="linear")
        >>> plot_keyframe_weights(p).axes[0].lines[1].get_ydata().round(2).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]
    """
    if side not in ("positive", "negative"):
        raise ValueError(f"side: {side!r} is unknown; allowed: 'positive', 'negative'")
    items = _as_list(params)
    loops = max(p.sequence_loop_count for p in items)
    fig, axes = _figure(len(items), 1, figsize=(9, 1.2 + 2.0 * len(items)), sharex=True)
    prompt_lists = []
    for ax, p in zip(axes, items, strict=True):
        plans = plan_sequence(p)
        keyframes = p.positive_keyframes if side == "positive" else p.negative_keyframes
        prompts = list(dict.fromkeys(prompt for _, prompt in keyframes))
        prompt_lists.append(prompts)
        weights = [chain_weights(getattr(plan, side)) for plan in plans]
        index = np.arange(len(plans))
        for color, prompt in zip(_COLORS * 4, prompts, strict=False):
            y = np.array([w.get(prompt, 0.0) for w in weights])
            # Steps, not ramps: a loop's conditioning is one value, constant over the loop.
            ax.plot(
                index,
                y,
                marker="o",
                drawstyle="steps-mid",
                color=color,
                ms=4,
                lw=1.8,
                alpha=0.9,
                label=_shorten(prompt or "(empty)", 40),
            )
        for k, _prompt in keyframes:
            if 0 < k < p.sequence_loop_count:
                ax.axvline(k, color=_MUTED, ls="--", lw=1, zorder=1)
        ax.set_ylim(-0.05, 1.12)
        ax.set_yticks([0, 0.5, 1])
        ax.set_ylabel("weight", fontsize=9)
        ax.set_title(_interpolation_title(p), fontsize=10.5, loc="left")
        _integer_loops(ax, loops)
    shared = all(prompts == prompt_lists[0] for prompts in prompt_lists)
    if shared:
        fig.legend(
            handles=axes[0].lines[: len(prompt_lists[0])],
            loc="outside lower center",
            ncols=min(3, len(prompt_lists[0])),
            fontsize=9,
            frameon=False,
        )
    else:
        for ax in axes:
            ax.legend(fontsize=8.5, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    axes[-1].set_xlabel("loop (dashed lines: keyframes)")
    fig.suptitle(f"How much of each {side} prompt every loop holds", fontsize=13)
    return fig


# ------------------------------------------------------------------------------------------------
# 4. drift between loops
# ------------------------------------------------------------------------------------------------

Latents = torch.Tensor | Sequence[torch.Tensor] | Sequence["Frame"]


def _stack(latents: Latents) -> torch.Tensor:
    if isinstance(latents, torch.Tensor):
        stacked = latents
    else:
        items = [getattr(item, "latent", item) for item in latents]
        if not items:
            raise ValueError("expected at least two latents, got none")
        stacked = torch.stack([torch.as_tensor(item).reshape(items[0].shape) for item in items])
    if stacked.ndim < 2 or stacked.shape[0] < 2:
        raise ValueError(
            f"expected at least two latents ([N, C, h, w] with N >= 2), got shape "
            f"{tuple(stacked.shape)}"
        )
    return stacked.detach().float().cpu().reshape(stacked.shape[0], -1)


def latent_drift(latents: Latents) -> tuple[np.ndarray, np.ndarray]:
    """L2 distance and cosine similarity between consecutive loops' latents.

    Args:
        latents: the stacked output ``[N, C, h, w]`` (`SequenceSampler.sample`), a list of
            latents, or a list of `Frame` objects (``session.path(branch)``).

    Returns:
        ``(distance, cosine)``: two arrays of ``N - 1`` values; item ``i`` compares loop ``i + 1``
        with loop ``i``.

    Example:
        >>> d, c = latent_drift(torch.stack([torch.ones(4), torch.ones(4), -torch.ones(4)]))
        >>> d.tolist(), c.tolist()
        ([0.0, 4.0], [1.0, -1.0])
    """
    flat = _stack(latents)
    before, after = flat[:-1], flat[1:]
    distance = (after - before).norm(dim=1)
    cosine = torch.nn.functional.cosine_similarity(after, before, dim=1)
    return distance.numpy(), cosine.numpy()


def plot_drift(
    latents: Latents | Mapping[str, Latents],
    *,
    keyframes: Sequence[int] = (),
) -> Figure:
    """How far each loop moves from the loop before: latent L2 distance and cosine similarity.

    Loopback drift made visible: a large distance is a jump (a new keyframe, a fresh seed, a high
    ``denoise_seq``); a cosine similarity near 1 is a loop that kept the picture. Pass a mapping
    ``{label: latents}`` to compare runs (e.g. latent interpolation modes) on one figure.

    Args:
        latents: ``[N, C, h, w]``, a list of latents or of `Frame` objects; or a mapping from a
            label to one of those.
        keyframes (`Sequence[int]`, *optional*): loops to mark with a dashed line.

    Returns:
        `Figure`: two axes (distance, cosine), each with one line per run whose points are the
        `latent_drift` values at loops ``1 .. N-1``.

    Example:
        >>> fig = plot_drift(torch.randn(6, 4, 8, 8))
        >>> len(fig.axes[0].lines[0].get_xdata())
        5
    """
    runs = dict(latents) if isinstance(latents, Mapping) else {"": latents}
    fig, (dist_ax, cos_ax) = _figure(2, 1, figsize=(8, 5.4), sharex=True)
    longest = 0
    for color, (label, run) in zip(_COLORS * 4, runs.items(), strict=False):
        distance, cosine = latent_drift(run)
        x = np.arange(1, len(distance) + 1)
        longest = max(longest, len(distance) + 1)
        dist_ax.plot(x, distance, "-o", color=color, ms=4, lw=1.6, label=label or None)
        cos_ax.plot(x, cosine, "-o", color=color, ms=4, lw=1.6, label=label or None)
    for k in keyframes:
        for ax in (dist_ax, cos_ax):
            ax.axvline(k, color=_MUTED, ls="--", lw=1, zorder=1)
    dist_ax.set_ylim(bottom=0)
    dist_ax.set_ylabel("L2 distance\nto the loop before", fontsize=9.5)
    cos_ax.set_ylabel("cosine similarity\nto the loop before", fontsize=9.5)
    cos_ax.set_xlabel("loop" + (" (dashed lines: keyframes)" if keyframes else ""))
    _integer_loops(cos_ax, longest)
    if any(runs):
        dist_ax.legend(fontsize=9, frameon=False)
    fig.suptitle("Drift: how much each loop changes the latent", fontsize=13, x=0.02, ha="left")
    return fig


def drift_figure(
    runs: Mapping[str, Sequence[Mapping[str, Any]] | Sequence[float]],
    measure: str = "drift_lab",
    *,
    keyframes: Sequence[int] = (),
) -> Figure:
    """One per-loop measure of `seqwidgets.metrics` for several runs: watch colours drift.

    Args:
        runs: a label -> that run's rows (``session.metrics(branch)``), or its values per loop.
        measure (`str`, defaults to ``"drift_lab"``): a column of `seqwidgets.metrics.MEASURES`.
        keyframes (`Sequence[int]`, *optional*): loops to mark with a dashed line.

    Returns:
        `Figure`: one axis, one line per run (one point per loop, NaN left out).

    Example:
        >>> rows = [{"loop": i, "drift_lab": 0.5 * i} for i in range(4)]
        >>> fig = drift_figure({"none": rows, "lab": [0.0, 0.2, 0.1, 0.2]})
        >>> [len(line.get_xdata()) for line in fig.axes[0].lines]
        [4, 4]
    """
    from seqwidgets.metrics import MEASURES, check_measure

    info = MEASURES[check_measure(measure)]
    if not runs:
        raise ValueError("expected at least one run, got none")
    fig, (ax,) = _figure(figsize=(8, 3.8))
    longest = 0
    for color, (label, rows) in zip(_COLORS * 4, runs.items(), strict=False):
        values = [row[measure] if isinstance(row, Mapping) else row for row in rows]
        loops = [row["loop"] if isinstance(row, Mapping) else i for i, row in enumerate(rows)]
        points = [(x, y) for x, y in zip(loops, values, strict=True) if not math.isnan(y)]
        longest = max(longest, len(values))
        ax.plot(*zip(*points, strict=True), "-", color=color, lw=1.6, label=label)
    for k in keyframes:
        ax.axvline(k, color=_MUTED, ls="--", lw=1, zorder=1)
    ax.set_ylim(bottom=min(0, ax.get_ylim()[0]))
    ax.set_ylabel(f"{info.label}\n({info.unit})", fontsize=9.5)
    ax.set_xlabel("loop" + (" (dashed lines: keyframes)" if keyframes else ""))
    _integer_loops(ax, longest)
    ax.legend(fontsize=9, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"{info.label.capitalize()}, loop by loop", fontsize=13, x=0.02, ha="left")
    return fig


# ------------------------------------------------------------------------------------------------
# 5. interpolation
# ------------------------------------------------------------------------------------------------


def plot_interpolation_norms(
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    dim: int = 4 * 64 * 64,
    seed: int = 0,
    points: int = 51,
) -> Figure:
    """Why slerp: the norm of ``mix(t, a, b)`` along ``t`` for the node's three latent mixes.

    Two independent noise vectors are nearly orthogonal with the same norm. Their straight line
    (``Blend``, a lerp) cuts through the inside of the sphere: halfway, the norm has shrunk to
    about ``1/sqrt(2)`` of it, which to a diffusion model looks like less noise (washed-out, flat
    pictures). ``Slerp`` follows the arc and keeps the norm. ``Cosine Interp`` is a lerp with an
    eased ``t``: the same dip, reached more gently.

    Args:
        a, b (`torch.Tensor`, *optional*): the two vectors (any equal shapes); default two
            standard normal vectors of ``dim`` values drawn with ``seed``.
        dim (`int`, defaults to 16384): size of the default vectors (an SD 1.5 latent at 512 px).
        seed (`int`, defaults to 0): seed of the default vectors.
        points (`int`, defaults to 51): values of ``t`` from 0 to 1.

    Returns:
        `Figure`: one axis with three lines (Blend, Slerp, Cosine Interp) of ``points`` values:
        the norm of the mix relative to the norm of ``a``.

    Example:
        >>> fig = plot_interpolation_norms(dim=256)
        >>> [line.get_label() for line in fig.axes[0].lines[:3]]
        ['Blend (lerp)', 'Slerp', 'Cosine Interp']
    """
    generator = torch.Generator().manual_seed(seed)
    if a is None:
        a = torch.randn(1, dim, generator=generator)
    if b is None:
        b = torch.randn(a.shape, generator=generator)
    a = a.reshape(1, -1).double()
    b = b.reshape(1, -1).double()
    ts = np.linspace(0.0, 1.0, points)
    reference = float(a.norm())
    fig, (ax,) = _figure(figsize=(7.5, 4.3))
    mixes = (
        ("Blend (lerp)", interp.blend_latents, _COLORS[0], "-"),
        ("Slerp", interp.slerp_latents, _COLORS[1], "-"),
        ("Cosine Interp", interp.cosine_interp_latents, _COLORS[2], "--"),
    )
    for label, mix, color, style in mixes:
        norms = [float(mix(float(t), a, b).norm()) / reference for t in ts]
        ax.plot(ts, norms, style, color=color, lw=2, label=label)
    ax.axhline(1 / math.sqrt(2), color=_MUTED, lw=1, ls=":")
    ax.annotate(
        "1/√2: half the variance is gone",
        (0.5, 1 / math.sqrt(2)),
        textcoords="offset points",
        xytext=(0, -14),
        ha="center",
        fontsize=8.5,
        color="#555555",
    )
    ax.set_ylim(0.6, 1.08)
    ax.set_xlim(0, 1)
    ax.set_xlabel("t (latent_interp_strength): 0 = previous result, 1 = new sample")
    ax.set_ylabel("norm of the mix / norm of a")
    ax.set_title("Mixing two noise latents: lerp shrinks them, slerp does not", fontsize=12)
    ax.legend(fontsize=9.5, frameon=False, loc="lower left")
    return fig


# ------------------------------------------------------------------------------------------------
# 6. images
# ------------------------------------------------------------------------------------------------


def plot_contact_sheet(
    images: Sequence[Image.Image],
    captions: Sequence[str | Sequence[str]] | None = None,
    *,
    columns: int | None = None,
    cell: int | tuple[int, int] | None = None,
    title: str | None = None,
    scale: float = 1.0,
) -> Figure:
    """A grid of captioned images as a figure (`seqwidgets.export.contact_sheet` inside it).

    Args:
        images (`Sequence[PIL.Image.Image]`): e.g. ``[session.image(branch, i) for i in
            branch.indices]``.
        captions (*optional*): one string (or list of lines) per image.
        columns (`int`, *optional*): defaults to ``ceil(sqrt(len(images)))``.
        cell (`int` or `(width, height)`, *optional*): the image area of a cell in pixels;
            small images are enlarged (see `contact_sheet`).
        title (`str`, *optional*): a title above the grid.
        scale (`float`, defaults to 1.0): figure size per sheet pixel (1.0: one to one at 100 dpi).

    Returns:
        `Figure`: one axis showing the sheet at its pixel size, without ticks.

    Example:
        >>> from PIL import Image
        >>> fig = plot_contact_sheet([Image.new("RGB", (8, 8))] * 3, ["a", "b", "c"], columns=3)
        >>> fig.axes[0].images[0].get_array().shape[1] > 3 * 8
        True
    """
    from seqwidgets.export import contact_sheet

    sheet = contact_sheet(images, captions, columns=columns, cell=cell)
    dpi = 100
    title_h = 0.4 if title else 0.0
    fig = _Figure(
        figsize=(sheet.width * scale / dpi, sheet.height * scale / dpi + title_h),
        dpi=dpi,
    )
    ax = fig.add_axes((0, 0, 1, sheet.height * scale / dpi / fig.get_figheight()))
    ax.imshow(np.asarray(sheet), interpolation="nearest")
    ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.05 / fig.get_figheight())
    return fig


def plot_timelines(
    rows: Mapping[str, Sequence[Image.Image]],
    captions: Mapping[str, Sequence[str | Sequence[str]]] | None = None,
    *,
    cell: int | tuple[int, int] = 64,
    title: str | None = None,
) -> Figure:
    """Several timelines side by side, one labelled row each: runs, variants or branches.

    Cells line up across rows (same cell size, rows start at the left edge), so loop ``i`` of
    every row sits in the same column.

    Args:
        rows (`Mapping[str, Sequence[PIL.Image.Image]]`): a row label -> that row's images, e.g.
            ``{b.name: [session.image(b, i) for i in b.indices] for b in session.branches}``.
        captions (*optional*): a row label -> one caption per image; default ``"loop <i>"``.
        cell (`int` or `(width, height)`, defaults to 64): the image area of a cell in pixels.
        title (`str`, *optional*): a title above the rows.

    Returns:
        `Figure`: one axis per row, titled with its label, showing that row's contact sheet at
        its pixel size.

    Example:
        >>> from PIL import Image
        >>> rows = {"a": [Image.new("RGB", (8, 8))] * 3, "b": [Image.new("RGB", (8, 8))] * 2}
        >>> [ax.get_title(loc="left") for ax in plot_timelines(rows).axes]
        ['a', 'b']
    """
    from seqwidgets.export import contact_sheet

    if not rows:
        raise ValueError("expected at least one row, got none")
    sheets = []
    for label, images in rows.items():
        row_captions = (captions or {}).get(label) or [f"loop {i}" for i in range(len(images))]
        sheets.append((label, contact_sheet(images, row_captions, columns=len(images), cell=cell)))
    dpi = 100
    label_px, title_px = 22, 30 if title else 0
    width_px = max(sheet.width for _, sheet in sheets)
    height_px = sum(sheet.height + label_px for _, sheet in sheets) + title_px
    fig = _Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    top = height_px - title_px
    for label, sheet in sheets:
        top -= label_px + sheet.height
        ax = fig.add_axes((0, top / height_px, sheet.width / width_px, sheet.height / height_px))
        ax.imshow(np.asarray(sheet), interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(label, loc="left", fontsize=10, pad=4, x=0.005)
    if title:
        fig.suptitle(title, fontsize=12, y=1 - 6 / height_px, va="top")
    return fig
