"""The name lists seqwidgets accepts, each written once, without torch.

Every list of names a setting can take lives here, so the settings schema (`seqwidgets.params`),
the numerical code (`seqwidgets.schedules`, `seqwidgets.samplers`, `seqwidgets.interp`,
`seqwidgets.plan`) and the docs cannot drift apart:

* `SAMPLER_SPECS`: one `SamplerSpec` per ComfyUI sampler we offer, in ComfyUI's menu order.
  `SAMPLERS`, `ANCESTRAL_SAMPLERS`, `SDE_SAMPLERS`, `DISCARD_PENULTIMATE_SIGMA_SAMPLERS`,
  `samplers_by_group` and `samplers_markdown` derive from it; adding a sampler is one entry here
  plus its function. `SAMPLER_GROUPS` orders the menu groups.
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

import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ANCESTRAL_SAMPLERS",
    "BUILT_IN_MODELS",
    "COLOR_COHERENCE_MODES",
    "COLOR_REFERENCES",
    "HUB_ID",
    "DISCARD_PENULTIMATE_SIGMA_SAMPLERS",
    "IMAGE_SUFFIXES",
    "KEYFRAME_INTERPOLATIONS",
    "LATENT_INTERPOLATION_MODES",
    "NOISE_KINDS",
    "SAMPLERS",
    "SAMPLER_GROUPS",
    "SAMPLER_SPECS",
    "SAMPLER_SPECS_BY_NAME",
    "SCHEDULERS",
    "SDE_SAMPLERS",
    "SamplerSpec",
    "check_sampler",
    "check_scheduler",
    "samplers_by_group",
    "sampler_line",
    "sampler_menu",
    "samplers_help",
    "samplers_markdown",
]

NoiseKind = Literal["none", "gaussian", "brownian"]
#: What extra noise a sampler draws while it steps: ``"none"`` (a deterministic ODE solver),
#: ``"gaussian"`` (fresh ``randn`` per step, ComfyUI's ``default_noise_sampler``) or
#: ``"brownian"`` (increments of one Brownian tree over the schedule, the SDE solvers).
NOISE_KINDS: tuple[str, ...] = ("none", "gaussian", "brownian")


#: The menu groups of `SamplerSpec.group`, in the order a menu shows them: ``"common"`` (the
#: samplers most workflows name), ``"ancestral"`` (fresh Gaussian noise after each step),
#: ``"SDE"`` (stochastic solvers: Brownian-tree increments, SEEDS, SA-Solver), ``"multistep"``
#: (deterministic, reusing earlier steps' estimates), ``"CFG++"`` (read the negative prompt's
#: estimate as well) and ``"other"`` (second-order single-step, adaptive and the rest).
SAMPLER_GROUPS: tuple[str, ...] = ("common", "ancestral", "SDE", "multistep", "CFG++", "other")


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
        model_calls: model calls per step in the middle of a schedule (see `loop_calls` for the
            first and last steps); ``None`` for a sampler that walks its own sigma grid between
            the schedule's first and last nonzero sigma, so the schedule's steps are not its steps
            (``dpm_fast``: ``steps`` calls in all; ``dpm_adaptive``: as many as its error control
            asks for).
        summary: one line for the docs and menus.
        group: its menu group (see `SAMPLER_GROUPS`).
        options: keyword arguments ComfyUI's ``sampler_object`` passes to the shared function
            (``solver_type="heun"``, ``cpu_tree=False`` for the ``_gpu`` variants, ...).
        to_zero_calls: model calls of a last step that ends at sigma 0 (``None``: as any step).
        head_calls: model calls of the first steps, where they differ.
        tail_calls: model calls of the last steps whatever the last sigma, where they differ.

    Example:
        >>> spec = SAMPLER_SPECS_BY_NAME["dpmpp_2m_sde_heun_gpu"]
        >>> spec.function, spec.kwargs, spec.cpu_tree
        ('sample_dpmpp_2m_sde', {'solver_type': 'heun', 'cpu_tree': False}, False)
        >>> SAMPLER_SPECS_BY_NAME["heun"].loop_calls(4, to_zero=True)
        7
    """

    name: str
    function: str
    noise: NoiseKind
    discard_penultimate: bool = False
    model_calls: int | None = 1
    summary: str = ""
    group: str = "other"
    options: tuple[tuple[str, object], ...] = ()
    to_zero_calls: int | None = None
    head_calls: tuple[int, ...] = ()
    tail_calls: tuple[int, ...] = ()

    @property
    def kwargs(self) -> dict[str, object]:
        """`options` as the keyword arguments of the sampler function."""
        return dict(self.options)

    @property
    def cpu_tree(self) -> bool:
        """Whether its Brownian tree lives on the CPU (ComfyUI's ``cpu=True``); the ``_gpu``
        variants draw it on the latent's device instead."""
        return bool(self.kwargs.get("cpu_tree", True))

    @property
    def cfg_pp(self) -> bool:
        """Whether it reads the negative prompt's estimate too (CFG++): the negative half of the
        batch then runs at every step, cfg 1 included."""
        return self.name.endswith("_cfg_pp")

    def loop_calls(self, steps: int, to_zero: bool) -> int | None:
        """Model calls of a loop of ``steps`` steps (``to_zero``: the last one ends at sigma 0);
        ``None`` where the sampler chooses its own number (``dpm_adaptive``).

        Example:
            >>> SAMPLER_SPECS_BY_NAME["heunpp2"].loop_calls(4, to_zero=False)
            9
        """
        if self.model_calls is None:  # its own grid: dpm_fast spends `steps` calls in all
            return steps if self.name == "dpm_fast" else None
        total = 0
        for i in range(steps):
            calls = self.model_calls
            from_end = steps - 1 - i
            if from_end < len(self.tail_calls):
                calls = self.tail_calls[len(self.tail_calls) - 1 - from_end]
            if to_zero and from_end == 0 and self.to_zero_calls is not None:
                calls = self.to_zero_calls
            if i < len(self.head_calls):
                calls = self.head_calls[i]
            total += calls
        return total


def _cpu_tree(options: tuple[tuple[str, object], ...] = ()) -> tuple[tuple[str, object], ...]:
    return (*options, ("cpu_tree", False))


#: The samplers in the order of ComfyUI's menu (``KSampler.SAMPLERS``). ``ddim`` is ComfyUI's
#: ``euler`` (its inpaint-only "random" option has no effect without a mask); the ``_gpu``
#: variants run the same function with the Brownian tree on the latent's device.
SAMPLER_SPECS: tuple[SamplerSpec, ...] = (
    SamplerSpec(
        "euler", "sample_euler", "none", summary="Euler steps, first order.", group="common"
    ),
    SamplerSpec(
        "euler_cfg_pp",
        "sample_euler_ancestral_cfg_pp",
        "none",
        summary="Euler with CFG++: steps along the negative prompt's direction.",
        group="CFG++",
        options=(("eta", 0.0), ("s_noise", 0.0)),
    ),
    SamplerSpec(
        "euler_ancestral",
        "sample_euler_ancestral",
        "gaussian",
        summary="Euler to sigma_down, then fresh noise up to the next sigma.",
        group="common",
    ),
    SamplerSpec(
        "euler_ancestral_cfg_pp",
        "sample_euler_ancestral_cfg_pp",
        "gaussian",
        summary="Ancestral Euler with CFG++.",
        group="CFG++",
    ),
    SamplerSpec(
        "heun",
        "sample_heun",
        "none",
        model_calls=2,
        summary="Heun, second order.",
        group="common",
        to_zero_calls=1,
    ),
    SamplerSpec(
        "heunpp2",
        "sample_heunpp2",
        "none",
        model_calls=3,
        summary="Heun++: three estimates per step; the last two steps take 2 and 1.",
        tail_calls=(2, 1),
    ),
    SamplerSpec(
        "dpm_2",
        "sample_dpm_2",
        "none",
        discard_penultimate=True,
        model_calls=2,
        summary="DPM-Solver-2 midpoint steps in log sigma.",
        to_zero_calls=1,
    ),
    SamplerSpec(
        "dpm_2_ancestral",
        "sample_dpm_2_ancestral",
        "gaussian",
        discard_penultimate=True,
        model_calls=2,
        summary="Ancestral DPM-Solver-2.",
        group="ancestral",
        to_zero_calls=1,
    ),
    SamplerSpec(
        "lms", "sample_lms", "none", summary="Linear multistep, order 4.", group="multistep"
    ),
    SamplerSpec(
        "dpm_fast",
        "sample_dpm_fast",
        "none",
        model_calls=None,
        summary="DPM-Solver fast: its own log-sigma grid, `steps` calls in all; ends at the "
        "last nonzero sigma.",
        group="other",
    ),
    SamplerSpec(
        "dpm_adaptive",
        "sample_dpm_adaptive",
        "none",
        model_calls=None,
        summary="DPM-Solver-23, adaptive step size: chooses its own number of calls; ends at "
        "the last nonzero sigma.",
        group="other",
    ),
    SamplerSpec(
        "dpmpp_2s_ancestral",
        "sample_dpmpp_2s_ancestral",
        "gaussian",
        model_calls=2,
        summary="Ancestral DPM-Solver++(2S), two stages per step.",
        group="ancestral",
        to_zero_calls=1,
    ),
    SamplerSpec(
        "dpmpp_2s_ancestral_cfg_pp",
        "sample_dpmpp_2s_ancestral_cfg_pp",
        "gaussian",
        model_calls=2,
        summary="Ancestral DPM-Solver++(2S) with CFG++.",
        group="CFG++",
        to_zero_calls=1,
    ),
    SamplerSpec(
        "dpmpp_sde",
        "sample_dpmpp_sde",
        "brownian",
        model_calls=2,
        summary="DPM-Solver++ SDE, two stages, Brownian-tree noise.",
        group="common",
        to_zero_calls=1,
    ),
    SamplerSpec(
        "dpmpp_sde_gpu",
        "sample_dpmpp_sde",
        "brownian",
        model_calls=2,
        summary="dpmpp_sde with the Brownian tree on the latent's device.",
        group="SDE",
        options=_cpu_tree(),
        to_zero_calls=1,
    ),
    SamplerSpec(
        "dpmpp_2m",
        "sample_dpmpp_2m",
        "none",
        summary="DPM-Solver++(2M) multistep.",
        group="common",
    ),
    SamplerSpec(
        "dpmpp_2m_cfg_pp",
        "sample_dpmpp_2m_cfg_pp",
        "none",
        summary="DPM-Solver++(2M) with CFG++.",
        group="CFG++",
    ),
    SamplerSpec(
        "dpmpp_2m_sde",
        "sample_dpmpp_2m_sde",
        "brownian",
        summary="DPM-Solver++(2M) SDE, Brownian-tree noise.",
        group="common",
    ),
    SamplerSpec(
        "dpmpp_2m_sde_gpu",
        "sample_dpmpp_2m_sde",
        "brownian",
        summary="dpmpp_2m_sde with the Brownian tree on the latent's device.",
        group="SDE",
        options=_cpu_tree(),
    ),
    SamplerSpec(
        "dpmpp_2m_sde_heun",
        "sample_dpmpp_2m_sde",
        "brownian",
        summary="DPM-Solver++(2M) SDE with the Heun correction (the RES formulation).",
        group="SDE",
        options=(("solver_type", "heun"),),
    ),
    SamplerSpec(
        "dpmpp_2m_sde_heun_gpu",
        "sample_dpmpp_2m_sde",
        "brownian",
        summary="dpmpp_2m_sde_heun with the Brownian tree on the latent's device.",
        group="SDE",
        options=_cpu_tree((("solver_type", "heun"),)),
    ),
    SamplerSpec(
        "dpmpp_3m_sde",
        "sample_dpmpp_3m_sde",
        "brownian",
        summary="DPM-Solver++(3M) SDE, third-order multistep, Brownian-tree noise.",
        group="SDE",
    ),
    SamplerSpec(
        "dpmpp_3m_sde_gpu",
        "sample_dpmpp_3m_sde",
        "brownian",
        summary="dpmpp_3m_sde with the Brownian tree on the latent's device.",
        group="SDE",
        options=_cpu_tree(),
    ),
    SamplerSpec(
        "ddpm",
        "sample_ddpm",
        "gaussian",
        summary="The original DDPM ancestral step (variance-preserving form).",
        group="ancestral",
    ),
    SamplerSpec(
        "lcm",
        "sample_lcm",
        "gaussian",
        summary="Latent consistency: jump to the estimate, re-noise to the next sigma.",
        group="common",
    ),
    SamplerSpec(
        "ipndm",
        "sample_ipndm",
        "none",
        summary="Improved pseudo-numerical (Adams-Bashforth) multistep, order up to 4.",
        group="multistep",
    ),
    SamplerSpec(
        "ipndm_v",
        "sample_ipndm_v",
        "none",
        summary="iPNDM with coefficients for variable step sizes.",
        group="multistep",
    ),
    SamplerSpec(
        "deis",
        "sample_deis",
        "none",
        summary="DEIS exponential-integrator multistep, order up to 3.",
        group="multistep",
    ),
    SamplerSpec(
        "res_multistep",
        "sample_res_multistep",
        "none",
        summary="RES second-order multistep exponential integrator.",
        group="common",
        options=(("eta", 0.0),),
    ),
    SamplerSpec(
        "res_multistep_cfg_pp",
        "sample_res_multistep",
        "none",
        summary="res_multistep with CFG++.",
        group="CFG++",
        options=(("eta", 0.0), ("cfg_pp", True)),
    ),
    SamplerSpec(
        "res_multistep_ancestral",
        "sample_res_multistep",
        "gaussian",
        summary="Ancestral res_multistep: fresh noise after each step.",
        group="ancestral",
    ),
    SamplerSpec(
        "res_multistep_ancestral_cfg_pp",
        "sample_res_multistep",
        "gaussian",
        summary="Ancestral res_multistep with CFG++.",
        group="CFG++",
        options=(("cfg_pp", True),),
    ),
    SamplerSpec(
        "gradient_estimation",
        "sample_gradient_estimation",
        "none",
        summary="Euler with a gradient-estimation correction from the previous step.",
    ),
    SamplerSpec(
        "gradient_estimation_cfg_pp",
        "sample_gradient_estimation",
        "none",
        summary="gradient_estimation with CFG++.",
        group="CFG++",
        options=(("cfg_pp", True),),
    ),
    SamplerSpec(
        "er_sde",
        "sample_er_sde",
        "gaussian",
        summary="Extended reverse-time SDE solver, up to third order, fresh noise per step.",
        group="common",
    ),
    SamplerSpec(
        "seeds_2",
        "sample_seeds_2",
        "gaussian",
        model_calls=2,
        summary="SEEDS-2: stochastic exponential solver, two stages per step.",
        group="SDE",
        to_zero_calls=1,
    ),
    SamplerSpec(
        "seeds_3",
        "sample_seeds_3",
        "gaussian",
        model_calls=3,
        summary="SEEDS-3: stochastic exponential solver, three stages per step.",
        group="SDE",
        to_zero_calls=1,
    ),
    SamplerSpec(
        "sa_solver",
        "sample_sa_solver",
        "gaussian",
        summary="SA-Solver: stochastic Adams predictor-corrector, noise mid-schedule.",
        group="SDE",
    ),
    SamplerSpec(
        "sa_solver_pece",
        "sample_sa_solver",
        "gaussian",
        model_calls=2,
        summary="SA-Solver re-evaluating the corrected state (PECE); the first step takes 1.",
        group="SDE",
        options=(("use_pece", True),),
        head_calls=(1,),
    ),
    SamplerSpec(
        "ddim", "sample_euler", "none", summary="ComfyUI's ddim: Euler steps.", group="common"
    ),
    SamplerSpec(
        "uni_pc",
        "sample_uni_pc",
        "none",
        discard_penultimate=True,
        summary="UniPC predictor-corrector, order 3 multistep (ComfyUI's own); ends at sigma 0.001.",
        group="common",
    ),
    SamplerSpec(
        "uni_pc_bh2",
        "sample_uni_pc_bh2",
        "none",
        discard_penultimate=True,
        summary="UniPC with the B(h) = e^h - 1 variant.",
        group="multistep",
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


def samplers_by_group() -> dict[str, tuple[str, ...]]:
    """The sampler names of each `SAMPLER_GROUPS` entry, each in ComfyUI's menu order.

    Example:
        >>> samplers_by_group()["CFG++"][:2]
        ('euler_cfg_pp', 'euler_ancestral_cfg_pp')
    """
    return {
        group: tuple(spec.name for spec in SAMPLER_SPECS if spec.group == group)
        for group in SAMPLER_GROUPS
    }


def sampler_menu() -> list[tuple[str, str]]:
    """The sampler menu as ``(label, name)`` pairs: the common samplers first, then each other
    group under its name, so 42 entries read as a few short lists.

    Example:
        >>> menu = sampler_menu()
        >>> menu[0], len(menu) == len(SAMPLERS)
        (('euler', 'euler'), True)
        >>> ("CFG++ · euler_cfg_pp", "euler_cfg_pp") in menu
        True
    """
    menu = []
    for group, names in samplers_by_group().items():
        for name in names:
            menu.append((name if group == "common" else f"{group} · {name}", name))
    return menu


def sampler_line(name: str) -> str:
    """One line on what the sampler ``name`` is: its group, cost and noise, then its summary.

    Example:
        >>> sampler_line("heun")
        'heun · common · 2 model calls a step · deterministic. Heun, second order.'
    """
    spec = SAMPLER_SPECS_BY_NAME[check_sampler(name)]
    if spec.model_calls is None:
        calls = "chooses its own model calls"
    else:
        calls = f"{spec.model_calls} model call{'s' if spec.model_calls > 1 else ''} a step"
    noise = {"none": "deterministic", "gaussian": "fresh noise each step", "brownian": "SDE noise"}
    return f"{name} · {spec.group} · {calls} · {noise[spec.noise]}. {spec.summary}"


def samplers_help() -> str:
    """The samplers by menu group in a few lines, for ``seqwidgets render --help``.

    Example:
        >>> print(samplers_help().splitlines()[0][:40])
        common: euler, euler_ancestral, heun, dp
    """
    return "\n".join(
        f"{group}: {', '.join(names)}" for group, names in samplers_by_group().items() if names
    )


#: ComfyUI's sigma schedules, in the order the settings offer them (ComfyUI's last two,
#: ``linear_quadratic`` and ``kl_optimal``, last here too).
SCHEDULERS: tuple[str, ...] = (
    "normal",
    "karras",
    "exponential",
    "sgm_uniform",
    "simple",
    "ddim_uniform",
    "beta",
    "linear_quadratic",
    "kl_optimal",
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
    "tiny-random-flux2-dev",
    "random-sd15",
    "random-sd3",
)

#: A Hugging Face hub id as `load_pipeline` and the CLI take it: "owner/name" of letters, digits,
#: "-", "_" and ".", not starting with "." (anything else is a local path).
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
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
    """A Markdown table of the samplers: name, model calls per step, extra noise, summary, group.

    Example:
        >>> print(samplers_markdown().splitlines()[2])
        | `euler` | 1 | none | Euler steps, first order. | common |
    """
    rows = [
        "| Sampler | Model calls / step | Extra noise | What it does | Menu group |",
        "|---|---|---|---|---|",
    ]
    for spec in SAMPLER_SPECS:
        note = spec.summary
        if spec.to_zero_calls is not None and spec.to_zero_calls != spec.model_calls:
            note += f" The step to sigma 0 takes {spec.to_zero_calls}."
        if spec.cfg_pp:
            note += " Runs the negative prompt at every step, cfg 1 included."
        if spec.discard_penultimate:
            note += " Drops the penultimate sigma."
        calls = "own grid" if spec.model_calls is None else spec.model_calls
        rows.append(f"| `{spec.name}` | {calls} | {spec.noise} | {note} | {spec.group} |")
    return "\n".join(rows)
