"""`SequenceParams`: the inputs of ComfyUI's KSampler Sequence node, validated.

Every input keeps the node's name, default and range (its ``INPUT_TYPES``). Four inputs are ours:
``width`` / ``height`` (the size of an empty latent; ``None`` means the pipeline's default size),
``keyframe_interpolation`` (a smooth transition between keyframes, see `seqwidgets.plan`) and
``flux_guidance`` (Flux dev's distilled guidance, ComfyUI's FluxGuidance node).

`PARAM_SPECS` is the single source of truth for each field's type, default, range or choices and
help text: validation reads it, and so do the widget panel and the README table.
"""

from __future__ import annotations

import dataclasses
import difflib
import numbers
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from seqwidgets import comfy
from seqwidgets.choices import (
    COLOR_COHERENCE_MODES,
    COLOR_REFERENCES,
    IMAGE_SUFFIXES,
    KEYFRAME_INTERPOLATIONS,
    LATENT_INTERPOLATION_MODES,
    SAMPLERS,
    SCHEDULERS,
)
from seqwidgets.errors import ParamError, ParamWarning, short_repr
from seqwidgets.keyframes import Keyframes, parse_keyframes

__all__ = ["PARAM_SPECS", "ParamError", "ParamSpec", "SequenceParams", "DEFAULT_POSITIVE_SEQ"]

#: The default text of the node's ``CLIPTextEncodeSequence`` encoder.
DEFAULT_POSITIVE_SEQ = (
    "0:A portrait of a rosebud\n"
    "5:A portrait of a blooming rosebud\n"
    "10:A portrait of a blooming rose\n"
    "15:A portrait of a rose"
)

#: Longest noise schedule a loop may slice its tail from (``int(steps / denoise)`` steps):
#: every setting the node can express (steps <= 10,000, denoise in steps of 0.01) fits.
MAX_SCHEDULE_STEPS = 1_000_000

SEED_MODES = ("increment", "decrement", "random", "fixed")


@dataclass(frozen=True)
class ParamSpec:
    """What one field of `SequenceParams` accepts.

    Attributes:
        name: the field name (the node's input name where the node has it).
        kind: ``"int"``, ``"float"``, ``"bool"``, ``"choice"`` or ``"keyframes"`` (a keyframe text).
        default: the default value.
        help: one line for tooltips and the README table.
        min, max: inclusive range of an ``int`` / ``float``.
        step: the widget step (the node's ``step`` where it gives one).
        choices: the allowed values of a ``choice``.
        nullable: ``None`` is allowed (it means "the pipeline decides").
        multiple_of: an ``int`` must be a multiple of this.
        node: the field is one of the node's inputs (``False`` for ours).
        path_suffixes: a ``choice`` that also accepts a path to a file with one of these
            suffixes (checked for existence when it is used, not here, so a saved session
            still loads on a machine without the file).
    """

    name: str
    kind: str
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple[str, ...] | None = None
    nullable: bool = False
    multiple_of: int | None = None
    node: bool = True
    path_suffixes: tuple[str, ...] | None = None

    def allowed(self, limit: int | None = None) -> str:
        """The allowed values, in words, for error messages and documentation (``limit``: name
        at most that many choices, then say how many more there are)."""
        if self.kind == "choice":
            shown = self.choices if limit is None else self.choices[:limit]
            text = "one of " + ", ".join(repr(c) for c in shown)
            if len(shown) < len(self.choices):
                text += f", ... and {len(self.choices) - len(shown)} more"
            if self.path_suffixes:
                text += ", or a path to a " + "/".join(self.path_suffixes) + " file"
        elif self.kind in ("int", "float"):
            text = f"{self.kind} from {self.min} to {self.max}"
            if self.multiple_of:
                text += f", a multiple of {self.multiple_of}"
        elif self.kind == "bool":
            text = "True or False"
        else:
            text = "a str of 'index: prompt' lines"
        return text + (", or None" if self.nullable else "")

    def validate(self, value: Any) -> Any:
        """Return ``value`` in its canonical Python type, or raise `ValueError` naming the field,
        the value and the allowed values. Numbers are never clamped."""
        if value is None and self.nullable:
            return None
        if self.kind == "bool":
            if not _is_bool(value):
                raise self._error(value, "wrong type")
            return bool(value)
        if self.kind == "int":
            if not isinstance(value, numbers.Integral) or _is_bool(value):
                raise self._error(value, "wrong type")
            value = int(value)
            if not self.min <= value <= self.max:
                raise self._error(value, "out of range")
            if self.multiple_of and value % self.multiple_of:
                raise self._error(value, f"not a multiple of {self.multiple_of}")
            return value
        if self.kind == "float":
            if not isinstance(value, numbers.Real) or _is_bool(value):
                raise self._error(value, "wrong type")
            if not in_range(value, self.min, self.max):
                raise self._error(value, "out of range")
            return float(value)
        if self.kind == "choice":
            if not isinstance(value, str) or not (value in self.choices or self._is_path(value)):
                raise self._error(value, "unknown choice")
            return str(value)
        if not isinstance(value, str):
            raise self._error(value, "wrong type")
        at = lone_surrogate(value)
        if at is not None:  # no tokenizer or file can take it
            raise self._error(value, f"not valid Unicode (a lone surrogate at {at})")
        return str(value)

    def _is_path(self, value: str) -> bool:
        return bool(self.path_suffixes) and value.lower().endswith(self.path_suffixes)

    def _error(self, value: Any, problem: str) -> ParamError:
        # reprlib: a 1 MB prompt or a deeply nested list must not make a 1 MB message.
        shown = short_repr(value)
        if problem == "wrong type":
            shown = f"{type(value).__name__} {shown}"
        if problem == "unknown choice" and isinstance(value, str):
            # A typo in a 42-name menu: name the closest entries before the list.
            close = difflib.get_close_matches(value, self.choices, n=3, cutoff=0.6)
            if close:
                problem += f" (did you mean {' or '.join(repr(c) for c in close)}?)"
        return ParamError(
            # a menu of 40 names is a wall in one line: the first dozen and a count
            self.name,
            f"{self.name}: {shown} is {problem}; allowed: {self.allowed(limit=12)}",
        )


def lone_surrogate(text: str) -> int | None:
    """Where ``text`` holds a lone surrogate (text decoded with ``errors="surrogateescape"``),
    which cannot be written as UTF-8; ``None`` for valid text.

    Example:
        >>> lone_surrogate("a red circle"), lone_surrogate("bad \\udc80")
        (None, 4)
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return error.start
    return None


def in_range(value: Any, low: float, high: float) -> bool:
    """Whether ``value`` is a real number (not a bool) in ``[low, high]``; NaN never is.

    Compared as given, before any conversion: ``float(10**400)`` would raise `OverflowError`.

    Example:
        >>> in_range(10**400, 0.0, 100.0), in_range(float("nan"), 0.0, 1.0), in_range(1, 0, 1)
        (False, False, True)
    """
    if not isinstance(value, numbers.Real) or _is_bool(value):
        return False
    try:
        return bool(low <= value <= high)
    except (TypeError, ValueError, ArithmeticError):  # e.g. a Decimal NaN
        return False


def _is_bool(value: Any) -> bool:
    # numpy.bool_ is not a subclass of bool; accept it without importing numpy.
    return isinstance(value, bool) or (
        type(value).__module__ == "numpy" and type(value).__name__ in ("bool_", "bool")
    )


def _specs(*specs: ParamSpec) -> dict[str, ParamSpec]:
    return {spec.name: spec for spec in specs}


#: Every field of `SequenceParams`, in the node's order, then ours.
PARAM_SPECS: dict[str, ParamSpec] = _specs(
    ParamSpec("seed", "int", 0, "Seed of loop 0; later loops follow seed_mode_seq.", 0, 2**64 - 1),
    ParamSpec(
        "seed_mode_seq",
        "choice",
        "increment",
        "How the seed changes from loop to loop (random is reproducible from seed).",
        choices=SEED_MODES,
    ),
    ParamSpec(
        "alternate_values",
        "bool",
        True,
        "The node's alternating seed: even loops take an alternate seed (fixed or drifting by seed % 3).",
    ),
    ParamSpec("steps", "int", 20, "Model steps per loop.", 1, 10000),
    ParamSpec("cfg", "float", 8.0, "Classifier-free guidance scale.", 0.0, 100.0, step=0.5),
    ParamSpec("sampler_name", "choice", "euler", "ComfyUI sampler.", choices=SAMPLERS),
    ParamSpec("scheduler", "choice", "normal", "ComfyUI sigma schedule.", choices=SCHEDULERS),
    ParamSpec("sequence_loop_count", "int", 20, "Number of loops (frames).", 1, 1024, step=1),
    ParamSpec(
        "positive_seq",
        "keyframes",
        DEFAULT_POSITIVE_SEQ,
        "Positive prompts, one 'loop: prompt' per line; a keyframe at loop 0 is required.",
    ),
    ParamSpec(
        "negative_seq",
        "keyframes",
        "",
        "Negative prompts, one 'loop: prompt' per line; empty means the empty prompt.",
    ),
    ParamSpec(
        "use_conditioning_slerp",
        "bool",
        False,
        "Each loop slerps the previous loop's conditioning towards the scheduled keyframe.",
    ),
    ParamSpec(
        "cond_slerp_strength",
        "float",
        0.5,
        "Conditioning slerp factor: 0 keeps the previous conditioning, 1 jumps to the keyframe.",
        0.0,
        1.0,
        step=0.001,
    ),
    ParamSpec(
        "use_latent_interpolation",
        "bool",
        False,
        "Mix each loop's result with the previous loop's result.",
    ),
    ParamSpec(
        "latent_interpolation_mode",
        "choice",
        "Blend",
        "How results are mixed: Blend (lerp), Slerp or Cosine Interp (eased lerp).",
        choices=LATENT_INTERPOLATION_MODES,
    ),
    ParamSpec(
        "latent_interp_strength",
        "float",
        0.5,
        "Latent mix factor: 0 keeps the previous result, 1 keeps the new sample.",
        0.0,
        1.0,
        step=0.001,
    ),
    ParamSpec(
        "denoise_start",
        "float",
        1.0,
        "Denoise of loop 0 (1 = from pure noise).",
        0.0,
        1.0,
        step=0.01,
    ),
    ParamSpec(
        "denoise_seq",
        "float",
        0.5,
        "Denoise of loops 1 and later, each starting from the previous result.",
        0.0,
        1.0,
        step=0.01,
    ),
    ParamSpec(
        "unsample_latents",
        "bool",
        False,
        "Invert the previous result to this loop's noise level before sampling it.",
    ),
    ParamSpec(
        "width",
        "int",
        None,
        "Width in pixels of an empty latent (None: the pipeline's default).",
        8,
        16384,
        step=8,
        nullable=True,
        multiple_of=8,
        node=False,
    ),
    ParamSpec(
        "height",
        "int",
        None,
        "Height in pixels of an empty latent (None: the pipeline's default).",
        8,
        16384,
        step=8,
        nullable=True,
        multiple_of=8,
        node=False,
    ),
    ParamSpec(
        "keyframe_interpolation",
        "choice",
        "none",
        "Slerp between keyframes across the loops between them (linear or eased); "
        "excludes use_conditioning_slerp.",
        choices=KEYFRAME_INTERPOLATIONS,
        node=False,
    ),
    ParamSpec(
        "color_coherence",
        "choice",
        "none",
        "Before each loop, match the previous result's colours to color_reference: histograms "
        "in lab, hsv or rgb (a VAE decode and encode per loop), or the latent's per-channel "
        "mean and std (latent, no VAE).",
        choices=COLOR_COHERENCE_MODES,
        node=False,
    ),
    ParamSpec(
        "color_reference",
        "choice",
        "loop0",
        "What color_coherence matches to: loop 0's result, the first loop of the current "
        "keyframe, or an image file.",
        choices=COLOR_REFERENCES,
        node=False,
        path_suffixes=IMAGE_SUFFIXES,
    ),
    ParamSpec(
        "flux_guidance",
        "float",
        3.5,
        "Flux dev's distilled guidance (ComfyUI's FluxGuidance); only models with guidance "
        "embeddings read it.",
        0.0,
        100.0,
        step=0.1,
        node=False,
    ),
)


def _default(name: str) -> Any:
    return field(default=PARAM_SPECS[name].default)


@dataclass(frozen=True)
class SequenceParams:
    """The settings of one sequence run, validated at construction.

    Field names, defaults and ranges are the KSampler Sequence node's; see `PARAM_SPECS` for each
    field's allowed values and help. Any invalid value raises `ValueError` naming the field, the
    value and what is allowed; nothing is clamped. Keyframe texts are parsed here, so a malformed
    line fails early with its line number; a keyframe that the loop count never reaches gives a
    `UserWarning`.
    """

    seed: int = _default("seed")
    seed_mode_seq: str = _default("seed_mode_seq")
    alternate_values: bool = _default("alternate_values")
    steps: int = _default("steps")
    cfg: float = _default("cfg")
    sampler_name: str = _default("sampler_name")
    scheduler: str = _default("scheduler")
    sequence_loop_count: int = _default("sequence_loop_count")
    positive_seq: str = _default("positive_seq")
    negative_seq: str = _default("negative_seq")
    use_conditioning_slerp: bool = _default("use_conditioning_slerp")
    cond_slerp_strength: float = _default("cond_slerp_strength")
    use_latent_interpolation: bool = _default("use_latent_interpolation")
    latent_interpolation_mode: str = _default("latent_interpolation_mode")
    latent_interp_strength: float = _default("latent_interp_strength")
    denoise_start: float = _default("denoise_start")
    denoise_seq: float = _default("denoise_seq")
    unsample_latents: bool = _default("unsample_latents")
    width: int | None = _default("width")
    height: int | None = _default("height")
    keyframe_interpolation: str = _default("keyframe_interpolation")
    color_coherence: str = _default("color_coherence")
    color_reference: str = _default("color_reference")
    flux_guidance: float = _default("flux_guidance")

    _positive_keyframes: tuple[tuple[int, str], ...] = field(init=False, repr=False, compare=False)
    _negative_keyframes: tuple[tuple[int, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, spec in PARAM_SPECS.items():
            object.__setattr__(self, name, spec.validate(getattr(self, name)))
        if self.use_conditioning_slerp and self.keyframe_interpolation != "none":
            raise ParamError(
                "use_conditioning_slerp",
                "use_conditioning_slerp=True and keyframe_interpolation="
                f"{self.keyframe_interpolation!r} exclude each other; "
                "set keyframe_interpolation='none' or use_conditioning_slerp=False",
            )
        for name in ("denoise_start", "denoise_seq"):
            denoise = getattr(self, name)
            # ComfyUI runs the tail of an int(steps / denoise)-step schedule: a tiny denoise
            # asks for an astronomically long one.
            if 0 < denoise < 1 and self.steps / denoise > MAX_SCHEDULE_STEPS:
                raise ParamError(
                    name,
                    f"{name}: {denoise!r} with steps={self.steps} needs a "
                    f"{self.steps / denoise:.3g}-step schedule; allowed: 0 (no change), or at "
                    f"least steps / {MAX_SCHEDULE_STEPS} = {self.steps / MAX_SCHEDULE_STEPS:g}",
                )
        positive = parse_keyframes(self.positive_seq, field="positive_seq")
        if not _has_keyframe_line(self.positive_seq):
            raise ParamError(
                "positive_seq",
                f"positive_seq: {self.positive_seq!r} holds no keyframe; "
                "allowed: one 'index: prompt' per line, starting at 0 (e.g. '0: a red circle')",
            )
        negative = parse_keyframes(self.negative_seq, field="negative_seq")
        for name, keyframes in (("positive_seq", positive), ("negative_seq", negative)):
            late = [index for index, _ in keyframes if index >= self.sequence_loop_count]
            if late:
                message = (
                    f"{name}: keyframe(s) at loop {', '.join(map(str, late))} never reached: "
                    f"sequence_loop_count is {self.sequence_loop_count} "
                    f"(loops 0 to {self.sequence_loop_count - 1})"
                )
                warnings.warn(ParamWarning(name, message), stacklevel=3)
        object.__setattr__(self, "_positive_keyframes", tuple(positive))
        object.__setattr__(self, "_negative_keyframes", tuple(negative))

    @property
    def positive_keyframes(self) -> Keyframes:
        """``positive_seq`` parsed: ``[(index, prompt), ...]`` sorted by index."""
        return list(self._positive_keyframes)

    @property
    def negative_keyframes(self) -> Keyframes:
        """``negative_seq`` parsed; ``[(0, "")]`` when it is empty."""
        return list(self._negative_keyframes)

    def to_dict(self) -> dict[str, Any]:
        """All fields as plain JSON-compatible values, keyed by field name."""
        return {name: getattr(self, name) for name in PARAM_SPECS}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SequenceParams:
        """Build from a mapping such as `to_dict`'s; missing keys take their defaults.

        Raises:
            `ValueError`: for an unknown key (naming it) or an invalid value.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"SequenceParams.from_dict: expected a mapping, got {d!r}")
        _check_names(d, "SequenceParams.from_dict")
        return cls(**d)

    def replace(self, **changes: Any) -> SequenceParams:
        """A copy with ``changes`` applied, validated like a new instance."""
        _check_names(changes, "SequenceParams.replace")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_comfy(cls, workflow: Any, *, node_id: str | int | None = None) -> SequenceParams:
        """Read the KSamplerSeq node of a ComfyUI workflow (dict, path or JSON text; UI or API
        format). See `seqwidgets.comfy.settings_from_workflow`."""
        where, settings = comfy.settings_from_workflow(workflow, node_id=node_id)
        try:
            return cls(**settings)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None

    def to_comfy(self, format: str = "widgets", **options: Any) -> Any:
        """The KSamplerSeq node's settings for ComfyUI: ``"widgets"`` (its ``widgets_values``
        list, with ``control_after_generate`` after the seed), ``"api"`` (its API-format widget
        inputs) or ``"workflow"`` (a complete API-format workflow). See `seqwidgets.comfy`."""
        writers = {
            "widgets": comfy.widgets_values,
            "api": comfy.api_inputs,
            "workflow": comfy.api_workflow,
        }
        if format not in writers:
            raise ValueError(f"format: {format!r} is unknown; allowed: {', '.join(writers)}")
        return writers[format](self, **options)


def _has_keyframe_line(text: str) -> bool:
    # After a successful parse, any line that is neither blank nor a comment is a keyframe.
    return any(line.strip() and not line.strip().startswith("#") for line in text.splitlines())


def _check_names(names: Mapping[str, Any], where: str) -> None:
    unknown = [name for name in names if name not in PARAM_SPECS]
    if unknown:
        raise ValueError(
            f"{where}: unknown parameter(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(PARAM_SPECS)}"
        )
