"""Named sampling settings for few-step (distilled) models, as their authors recommend them.

A distilled model is trained for a handful of steps and little or no classifier-free guidance:
run it at the node's defaults (20 steps, cfg 8) and it overshoots, burning colours and detail.
A preset sets the four fields that decide this, ``steps``, ``cfg``, ``sampler_name`` and
``scheduler``, and leaves every other setting (prompts, seeds, denoise, loops) alone.

``steps`` is the model steps of one loop, as everywhere in seqwidgets: a loop at ``denoise_seq``
0.5 still runs exactly ``steps`` model calls (ComfyUI's denoise semantics), so a 4-step preset is
a 4-step loop. ``cfg`` 1 is "no guidance": the negative prompt is ignored and each step costs one
model call instead of two (diffusers writes this as ``guidance_scale=0``).

Example:
    >>> import seqwidgets as sw
    >>> params = sw.SequenceParams(positive_seq="0: a red circle", denoise_seq=0.4)
    >>> fast = sw.presets.apply(params, "toy-live")
    >>> (fast.steps, fast.cfg, fast.sampler_name, fast.denoise_seq)
    (4, 1.0, 'euler', 0.4)
    >>> PRESETS["sdxl-lightning"].steps
    4
"""

from __future__ import annotations

from dataclasses import dataclass

from seqwidgets.params import SequenceParams

__all__ = ["PRESETS", "Preset", "apply", "get_preset"]


@dataclass(frozen=True)
class Preset:
    """One named group of sampling settings.

    Attributes:
        name: the preset's name, e.g. ``"sdxl-turbo"``.
        steps: model steps per loop.
        cfg: classifier-free guidance scale (1: none).
        sampler_name: a ComfyUI sampler name.
        scheduler: a ComfyUI scheduler name.
        source: one line saying where these values come from.
    """

    name: str
    steps: int
    cfg: float
    sampler_name: str
    scheduler: str
    source: str

    def describe(self) -> str:
        """One line: steps, cfg, sampler and scheduler.

        Example:
            >>> PRESETS["sdxl-turbo"].describe()
            '1 step, cfg 1, euler_ancestral, normal'
        """
        steps = "1 step" if self.steps == 1 else f"{self.steps} steps"
        return f"{steps}, cfg {self.cfg:g}, {self.sampler_name}, {self.scheduler}"

    def settings(self) -> dict[str, object]:
        """The `SequenceParams` fields this preset sets.

        Example:
            >>> PRESETS["flux-schnell"].settings()
            {'steps': 4, 'cfg': 1.0, 'sampler_name': 'euler', 'scheduler': 'simple'}
        """
        return {
            "steps": self.steps,
            "cfg": self.cfg,
            "sampler_name": self.sampler_name,
            "scheduler": self.scheduler,
        }


_PRESETS = (
    Preset(
        "toy-live",
        4,
        1.0,
        "euler",
        "normal",
        "the toy model's few-step table (few_steps.json, docs/toy_model.md): at 4 steps cfg 1 "
        "keeps 24/24 first loops and 72/72 later ones on the asked colour; cfg 8 12/24, 44/72",
    ),
    Preset(
        "sdxl-turbo",
        1,
        1.0,
        "euler_ancestral",
        "normal",
        "stabilityai/sdxl-turbo model card: 1-4 steps without guidance; ComfyUI's SDXL Turbo "
        "example: euler_ancestral, cfg 1",
    ),
    Preset(
        "sd-turbo",
        1,
        1.0,
        "euler_ancestral",
        "normal",
        "stabilityai/sd-turbo model card: 1-4 steps without guidance; ComfyUI's SDXL Turbo "
        "example: euler_ancestral, cfg 1",
    ),
    Preset(
        "sdxl-lightning",
        4,
        1.0,
        "euler",
        "sgm_uniform",
        "ByteDance/SDXL-Lightning model card: the 4-step checkpoint, cfg 1, Euler with "
        "sgm_uniform ('trailing') timesteps",
    ),
    Preset(
        "sdxl-lightning-8",
        8,
        1.0,
        "euler",
        "sgm_uniform",
        "ByteDance/SDXL-Lightning model card: the 8-step checkpoint, cfg 1, Euler with "
        "sgm_uniform ('trailing') timesteps",
    ),
    Preset(
        "lcm",
        4,
        1.5,
        "lcm",
        "sgm_uniform",
        "latent-consistency LCM / LCM-LoRA model cards: 4-8 steps, guidance 1-2; ComfyUI's LCM "
        "example: the lcm sampler with sgm_uniform",
    ),
    Preset(
        "flux-schnell",
        4,
        1.0,
        "euler",
        "simple",
        "black-forest-labs/FLUX.1-schnell model card and ComfyUI's Flux example: 4 steps, "
        "no guidance (cfg 1), euler, simple",
    ),
    Preset(
        "flux2-klein",
        4,
        1.0,
        "euler",
        "simple",
        "black-forest-labs FLUX.2 klein model card: a 4-step distilled model, no guidance "
        "(cfg 1); euler, simple as for Flux schnell",
    ),
    Preset(
        "z-image-turbo",
        8,
        1.0,
        "res_multistep",
        "simple",
        "Tongyi-MAI/Z-Image-Turbo model card: 8 model evaluations without guidance (cfg 1); "
        "ComfyUI's Z-Image example: res_multistep, simple",
    ),
)

#: Every preset by name, in menu order.
PRESETS: dict[str, Preset] = {preset.name: preset for preset in _PRESETS}


def get_preset(name: str) -> Preset:
    """The preset called ``name``.

    Raises:
        `ValueError`: ``name`` is not a preset (the message lists them).

    Example:
        >>> get_preset("turbo")
        Traceback (most recent call last):
        ...
        ValueError: preset: 'turbo' is not a preset; allowed: toy-live, sdxl-turbo, ...
    """
    preset = PRESETS.get(name)
    if preset is None:
        raise ValueError(f"preset: {name!r} is not a preset; allowed: {', '.join(PRESETS)}")
    return preset


def apply(params: SequenceParams, name: str) -> SequenceParams:
    """``params`` with preset ``name``'s steps, cfg, sampler and scheduler; all else kept.

    Raises:
        `ValueError`: ``name`` is not a preset (the message lists them).

    Example:
        >>> import seqwidgets as sw
        >>> params = apply(sw.SequenceParams(seed=7), "lcm")
        >>> (params.seed, params.steps, params.cfg, params.sampler_name, params.scheduler)
        (7, 4, 1.5, 'lcm', 'sgm_uniform')
    """
    return params.replace(**get_preset(name).settings())
