"""The name lists seqwidgets accepts, each written once, without torch.

Every list of names a setting can take lives here, so the settings schema (`seqwidgets.params`),
the numerical code (`seqwidgets.schedules`, `seqwidgets.samplers`, `seqwidgets.interp`,
`seqwidgets.plan`) and the docs cannot drift apart:

* `SAMPLER_SPECS`: one `SamplerSpec` per ComfyUI sampler we offer. `SAMPLERS`,
  `ANCESTRAL_SAMPLERS`, `SDE_SAMPLERS`, `DISCARD_PENULTIMATE_SIGMA_SAMPLERS` and
  `samplers_markdown` derive from it; adding a sampler is one entry here plus its function.
* `SCHEDULERS`, `LATENT_INTERPOLATION_MODES`, `KEYFRAME_INTERPOLATIONS`,
  `COLOR_COHERENCE_MODES`, `COLOR_REFERENCES`.

Example:
    >>> SAMPLER_SPECS_BY_NAME["dpmpp_2m_sde"].noise
    'brownian'
    >>> "dpm_2" in DISCARD_PENULTIMATE_SIGMA_SAMPLERS
    True
    >>> check_scheduler("karras")
    'karras'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ANCESTRAL_SAMPLERS",
    "BUILT_IN_MODELS",
    "COLOR_COHERENCE_MODES",
    "COLOR_REFERENCES",
    "DISCARD_PENULTIMATE_SIGMA_SAMPLERS",
    "IMAGE_SUFFIXES",
    "KEYFRAME_INTERPOLATIONS",
    "LATENT_INTERPOLATION_MODES",
    "NOISE_KINDS",
    "SAMPLERS",
    "SAMPLER_SPECS",
    "SAMPLER_SPECS_BY_NAME",
    "SCHEDULERS",
    "SDE_SAMPLERS",
    "SamplerSpec",
    "check_sampler",
    "check_scheduler",
    "samplers_markdown",
]

NoiseKind = Literal["none", "gaussian", "brownian"]
#: What extra noise a sampler draws while it steps: ``"none"`` (a deterministic ODE solver),
#: ``"gaussian"`` (fresh ``randn`` per step, ComfyUI's ``default_noise_sampler``) or
#: ``"brownian"`` (increments of one Brownian tree over the schedule, the SDE solvers).
NOISE_KINDS: tuple[str, ...] = ("none", "gaussian", "brownian")


@dataclass(frozen=True)
class SamplerSpec:
    """One ComfyUI sampler as seqwidgets runs it.

    Attributes:
        name: ComfyUI's sampler name (the ``sampler_name`` setting).
        function: the name of its function in `seqwidgets.samplers`.
        noise: the kind of extra noise it draws (see `NOISE_KINDS`); a batch of branches gives
            each item its own source of that kind.
        discard_penultimate: ComfyUI computes ``steps + 1`` sigmas and drops the penultimate one
            (``KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS``).
        model_calls: model calls per step (the step to sigma 0 may take fewer).
        summary: one line for the docs.
    """

    name: str
    function: str
    noise: NoiseKind
    discard_penultimate: bool = False
    model_calls: int = 1
    summary: str = ""


#: The samplers, in the order the settings offer them. ``ddim`` is ComfyUI's ``euler`` (its
#: inpaint-only "random" option has no effect without a mask).
SAMPLER_SPECS: tuple[SamplerSpec, ...] = (
    SamplerSpec("euler", "sample_euler", "none", summary="Euler steps, first order."),
    SamplerSpec(
        "euler_ancestral",
        "sample_euler_ancestral",
        "gaussian",
        summary="Euler to sigma_down, then fresh noise up to the next sigma.",
    ),
    SamplerSpec("heun", "sample_heun", "none", model_calls=2, summary="Heun, second order."),
    SamplerSpec(
        "dpm_2",
        "sample_dpm_2",
        "none",
        discard_penultimate=True,
        model_calls=2,
        summary="DPM-Solver-2 midpoint steps in log sigma.",
    ),
    SamplerSpec(
        "dpm_2_ancestral",
        "sample_dpm_2_ancestral",
        "gaussian",
        discard_penultimate=True,
        model_calls=2,
        summary="Ancestral DPM-Solver-2.",
    ),
    SamplerSpec("lms", "sample_lms", "none", summary="Linear multistep, order 4."),
    SamplerSpec("dpmpp_2m", "sample_dpmpp_2m", "none", summary="DPM-Solver++(2M) multistep."),
    SamplerSpec(
        "dpmpp_2m_sde",
        "sample_dpmpp_2m_sde",
        "brownian",
        summary="DPM-Solver++(2M) SDE, Brownian-tree noise.",
    ),
    SamplerSpec(
        "dpmpp_sde",
        "sample_dpmpp_sde",
        "brownian",
        model_calls=2,
        summary="DPM-Solver++ SDE, two stages, Brownian-tree noise.",
    ),
    SamplerSpec("ddim", "sample_euler", "none", summary="ComfyUI's ddim: Euler steps."),
    SamplerSpec(
        "lcm",
        "sample_lcm",
        "gaussian",
        summary="Latent consistency: jump to the estimate, re-noise to the next sigma.",
    ),
)

SAMPLER_SPECS_BY_NAME: dict[str, SamplerSpec] = {spec.name: spec for spec in SAMPLER_SPECS}
SAMPLERS: tuple[str, ...] = tuple(spec.name for spec in SAMPLER_SPECS)
#: Samplers drawing fresh Gaussian noise each step.
ANCESTRAL_SAMPLERS: frozenset[str] = frozenset(
    spec.name for spec in SAMPLER_SPECS if spec.noise == "gaussian"
)
#: Samplers whose extra noise is a Brownian tree over the schedule.
SDE_SAMPLERS: frozenset[str] = frozenset(
    spec.name for spec in SAMPLER_SPECS if spec.noise == "brownian"
)
#: ComfyUI's ``KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS`` restricted to the samplers we offer.
DISCARD_PENULTIMATE_SIGMA_SAMPLERS: frozenset[str] = frozenset(
    spec.name for spec in SAMPLER_SPECS if spec.discard_penultimate
)

#: ComfyUI's sigma schedules, in the order the settings offer them.
SCHEDULERS: tuple[str, ...] = (
    "normal",
    "karras",
    "exponential",
    "sgm_uniform",
    "simple",
    "ddim_uniform",
    "beta",
)

#: The node's ``latent_interpolation_mode`` values (functions in `seqwidgets.interp`).
LATENT_INTERPOLATION_MODES: tuple[str, ...] = ("Blend", "Slerp", "Cosine Interp")
#: ``keyframe_interpolation`` values: hold each keyframe, or slerp towards the next one linearly
#: or eased (see `seqwidgets.plan.prompt_chains`).
KEYFRAME_INTERPOLATIONS: tuple[str, ...] = ("none", "linear", "ease")
#: The pipelines ``load_pipeline`` builds by name, offline (besides hub ids and folders): random
#: tiny ones of every family for tests and demos, and random full-size ones for GPU measurements.
BUILT_IN_MODELS: tuple[str, ...] = (
    "tiny-random",
    "tiny-random-xl",
    "tiny-random-sd3",
    "tiny-random-flux",
    "tiny-random-flux-schnell",
    "tiny-random-chroma",
    "tiny-random-lumina2",
    "tiny-random-zimage",
    "tiny-random-qwen-image",
    "tiny-random-hidream",
    "tiny-random-flux2",
    "random-sd15",
    "random-sd3",
)

#: ``color_coherence`` values (ours): no matching, histogram matching in a pixel colour space,
#: or per-channel mean / std matching in latent space (see `seqwidgets.coherence`).
COLOR_COHERENCE_MODES: tuple[str, ...] = ("none", "lab", "hsv", "rgb", "latent")
#: ``color_reference`` values besides the path of an image file.
COLOR_REFERENCES: tuple[str, ...] = ("loop0", "keyframe")
#: Image files ``color_reference`` may name (PIL reads them all).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def check_sampler(name: str) -> str:
    """Return ``name`` if it is a supported sampler, else raise ValueError listing them.

    ComfyUI silently falls back to ``euler``; we refuse instead.

    Example:
        >>> check_sampler("euler")
        'euler'
    """
    return _check("sampler_name", name, SAMPLERS)


def check_scheduler(name: str) -> str:
    """Return ``name`` if it is a supported scheduler, else raise ValueError listing them.

    ComfyUI silently falls back to its first scheduler; we refuse instead.

    Example:
        >>> check_scheduler("karras")
        'karras'
    """
    return _check("scheduler", name, SCHEDULERS)


def _check(field: str, name: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(name, str) or name not in allowed:
        raise ValueError(f"unknown {field} {name!r}; supported: {', '.join(allowed)}")
    return name


def samplers_markdown() -> str:
    """A Markdown table of the samplers: name, model calls per step, extra noise, summary.

    Example:
        >>> print(samplers_markdown().splitlines()[2])
        | `euler` | 1 | none | Euler steps, first order. |
    """
    rows = [
        "| Sampler | Model calls / step | Extra noise | What it does |",
        "|---|---|---|---|",
    ]
    for spec in SAMPLER_SPECS:
        note = spec.summary + (" Drops the penultimate sigma." if spec.discard_penultimate else "")
        rows.append(f"| `{spec.name}` | {spec.model_calls} | {spec.noise} | {note} |")
    return "\n".join(rows)
