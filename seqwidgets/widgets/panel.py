"""The studio's control panel: one control per `SequenceParams` field, generated from `PARAM_SPECS`.

Each field's widget, range, step, choices and tooltip come from its `ParamSpec`; this module only
decides how fields are grouped on screen (`GROUPS`) and which widget fits each kind. A field added
to `PARAM_SPECS` later appears on its own, in an "Other" group, until someone places it.

Nothing is clamped: number fields are free text boxes, so an out-of-range value shows the
`SequenceParams` error next to the field instead of being silently corrected. `ControlPanel.params`
is the valid `SequenceParams` or ``None``; the studio disables Run while it is ``None``.

`ControlPanel.reference` is the settings of the frame selected on the timeline (the studio loads
them with `ControlPanel.load`). Every field typed differently from it is highlighted, and one line
says what a Branch from that frame will change; "reset to selected" drops the edits, "keep my
edits" carries them over to the next frame selected.

`ControlPanel.preset` fills steps, cfg, sampler and scheduler from `seqwidgets.presets` (settings
for few-step models such as SDXL-Turbo or the toy model's live drafts); a note under cfg says when
few steps meet a high cfg, which overshoots on a model that is not guidance-distilled.
"""

from __future__ import annotations

import html
import io
import warnings
from typing import Any

import ipywidgets as W
import traitlets

from seqwidgets.choices import sampler_line, sampler_menu
from seqwidgets.params import PARAM_SPECS, ParamSpec, SequenceParams
from seqwidgets.presets import PRESETS

from .render import describe_changes
from .sections import make_sections

__all__ = ["GROUPS", "ControlPanel"]

#: Where each field sits on screen. Prompts are always visible; the rest fold in sections.
GROUPS: dict[str, tuple[str, ...]] = {
    "Prompts": ("positive_seq", "negative_seq"),
    "Sampling": (
        "sequence_loop_count",
        "steps",
        "cfg",
        "flux_guidance",
        "sampler_name",
        "scheduler",
    ),
    "Seed": ("seed", "seed_mode_seq", "alternate_values"),
    "Denoise": ("denoise_start", "denoise_seq"),
    "Interpolation": (
        "keyframe_interpolation",
        "use_conditioning_slerp",
        "cond_slerp_strength",
        "use_latent_interpolation",
        "latent_interpolation_mode",
        "latent_interp_strength",
    ),
    "Unsample": ("unsample_latents",),
    "Colour coherence": ("color_coherence", "color_reference"),
    "Size": ("width", "height"),
}

# JavaScript numbers are doubles: an int above 2**53 cannot travel through an IntText intact
# (the node's seed goes up to 2**64 - 1), so such fields are edited as text.
_JS_SAFE_INT = 2**53
_LABEL_WIDTH = "150px"

# Few steps with a high cfg: the toy model's own evaluation (docs/toy_model.md, "Few steps")
# loses the asked colour at 4 steps from cfg 4 up, and keeps it at cfg 1-2.
FEW_STEPS = 8
HIGH_CFG = 4.0
FEW_STEPS_NOTE = "few steps with a high cfg overshoots: try cfg 1-2"


def _grouped_fields() -> dict[str, tuple[str, ...]]:
    """`GROUPS` restricted to known fields, plus an "Other" group for any field not placed."""
    placed = {name for names in GROUPS.values() for name in names}
    groups = {title: tuple(n for n in names if n in PARAM_SPECS) for title, names in GROUPS.items()}
    other = tuple(name for name in PARAM_SPECS if name not in placed)
    if other:
        groups["Other"] = other
    return {title: names for title, names in groups.items() if names}


def _is_text_int(spec: ParamSpec) -> bool:
    return spec.kind == "int" and (spec.nullable or spec.max >= _JS_SAFE_INT)


def _make_control(spec: ParamSpec) -> W.Widget:
    """The widget for one field: its kind, range and step come from the spec."""
    layout = W.Layout(width="auto", flex="1 1 auto")
    if spec.kind == "keyframes":
        rows = 5 if spec.name == "positive_seq" else 2
        return W.Textarea(
            value=spec.default or "",
            rows=rows,
            placeholder="0: a prompt\n8: another prompt",
            layout=W.Layout(width="100%"),
            continuous_update=True,
        )
    if spec.kind == "bool":
        return W.Checkbox(value=bool(spec.default), indent=False, layout=layout)
    if spec.kind == "choice" and spec.path_suffixes:
        # The choices, or a file path typed in.
        return W.Combobox(options=list(spec.choices), value=spec.default, layout=layout)
    if spec.name == "sampler_name":
        # 42 names: the common ones first, the others labelled by their group.
        return W.Dropdown(options=sampler_menu(), value=spec.default, layout=layout)
    if spec.kind == "choice":
        return W.Dropdown(options=list(spec.choices), value=spec.default, layout=layout)
    if _is_text_int(spec):
        placeholder = "auto (pipeline default)" if spec.nullable else ""
        value = "" if spec.default is None else str(spec.default)
        return W.Text(value=value, placeholder=placeholder, layout=layout)
    if spec.kind == "int":
        return W.IntText(value=spec.default, step=spec.step or 1, layout=layout)
    if spec.kind == "float" and spec.max - spec.min <= 1:
        # A bounded fraction (strength, denoise): a slider cannot leave its valid range.
        return W.FloatSlider(
            value=spec.default,
            min=spec.min,
            max=spec.max,
            step=spec.step or 0.01,
            readout_format=".3f" if (spec.step or 0.01) < 0.01 else ".2f",
            continuous_update=False,
            layout=layout,
        )
    return W.FloatText(value=spec.default, step=spec.step or 0.1, layout=layout)


def _read(spec: ParamSpec, control: W.Widget) -> Any:
    """The control's value as the Python value for the field; text that is not a number raises."""
    value = control.value
    if not _is_text_int(spec):
        return value
    text = value.strip().replace("_", "")
    if not text and spec.nullable:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"{spec.name}: {value!r} is not an integer; allowed: {spec.allowed()}"
        ) from None


def _shown(spec: ParamSpec, value: Any) -> Any:
    """What the field's control holds when it shows ``value``."""
    if _is_text_int(spec):
        return "" if value is None else str(value)
    return value


class ControlPanel(W.VBox):
    """Every `SequenceParams` field as a control, grouped, validated as you type.

    Attributes:
        controls (`dict[str, Widget]`): the control of each field, keyed by field name.
        messages (`dict[str, HTML]`): the validation message shown under each field.
        sampler_info (`HTML`): one line on what the selected sampler is (group, model calls a
            step, noise, summary); the sampler menu lists the common samplers first.
        rows (`dict[str, Widget]`): each field's row (label, control, message); an edited
            field's row has the CSS class ``sw-changed``.
        params (`SequenceParams | None`): the current settings, or ``None`` while invalid.
        error (`str`): the current validation error ("" when valid).
        reference (`SequenceParams | None`): the selected frame's settings, which the edits are
            measured against (``None``: nothing selected, nothing highlighted).
        keep_edits (`Checkbox`): when ticked, `load` keeps the typed edits on top of the new
            settings instead of replacing them.
        init_upload (`FileUpload`): an optional init image for loop 0 (see `init_image`).
        preset (`Dropdown`): "none" or a name of `seqwidgets.presets.PRESETS`; choosing one fills
            steps, cfg, sampler and scheduler, and editing one of those goes back to "none".
        few_steps_note (`HTML`): shown under cfg while steps <= 8 meet cfg >= 4 on a model
            that is not guidance-distilled.

    Args:
        params (`SequenceParams`, *optional*): initial settings (defaults: the node's).

    Example:
        >>> panel = ControlPanel()
        >>> panel.load(SequenceParams(cfg=8.0), source="run 1")   # the selected frame's
        >>> panel.controls["cfg"].value = 3.0                    # what the user types
        >>> panel.changes()
        {'cfg': (8.0, 3.0)}
        >>> panel.changes_line.value
        "<div class='sw-changes'><b>Branch will change:</b> cfg 8 → 3</div>"
        >>> panel.reset(); panel.changes()
        {}
    """

    params = traitlets.Instance(SequenceParams, allow_none=True)
    error = traitlets.Unicode("")
    reference = traitlets.Instance(SequenceParams, allow_none=True)

    def __init__(self, params: SequenceParams | None = None, **kwargs):
        super().__init__(**kwargs)
        self.add_class("sw-panel")
        self.controls: dict[str, W.Widget] = {}
        self.messages: dict[str, W.HTML] = {}
        self.rows: dict[str, W.Widget] = {}
        self._group_of: dict[str, str] = {}
        self._quiet = False
        for name, spec in PARAM_SPECS.items():
            self.controls[name] = _make_control(spec)
            self.messages[name] = W.HTML(layout=W.Layout(display="none", margin="0 0 2px 0"))
            self.rows[name] = self._row(spec)
        # One line on what the selected sampler is, under its menu.
        self.sampler_info = W.HTML(layout=W.Layout(margin="0 0 2px 0"))
        self.rows["sampler_name"].children += (self.sampler_info,)
        self.controls["sampler_name"].observe(self._show_sampler, "value")
        self._show_sampler()
        preset_row = self._make_preset_row()

        self.init_upload = W.FileUpload(
            accept="image/*",
            multiple=False,
            description="Init image",
            layout=W.Layout(width="auto"),
        )
        self.init_clear = W.Button(description="Clear", layout=W.Layout(width="70px"))
        self.init_status = W.HTML("<span class='sw-muted'>none: loop 0 starts from noise</span>")
        self.init_clear.on_click(lambda _: self._clear_init())
        self.init_upload.observe(self._on_upload, "value")
        init_row = W.VBox(
            [
                W.HBox([self.init_upload, self.init_clear]),
                self.init_status,
            ],
            layout=W.Layout(margin="4px 0 0 0"),
        )
        self._init_image = None

        groups = _grouped_fields()
        for title, names in groups.items():
            for name in names:
                self._group_of[name] = title
        prompts = W.VBox([self.rows[n] for n in groups.pop("Prompts", ())])
        sections = []
        for title, names in groups.items():
            children = [self.rows[n] for n in names]
            if title == "Sampling":
                children.insert(0, preset_row)
            if title == "Denoise":
                children.append(init_row)
            sections.append(W.VBox(children, layout=W.Layout(padding="2px 4px")))
        self._section_titles = list(groups)
        self.sections = make_sections(sections, self._section_titles)  # no Accordion on Colab
        self.sections.selected_index = self._section_titles.index("Sampling")
        self.general_message = W.HTML(layout=W.Layout(display="none"))

        # What the settings are measured against, and what a Branch would change.
        self.source = W.HTML("<span class='sw-muted'>settings for a new run</span>")
        self.changes_line = W.HTML(layout=W.Layout(display="none"))
        self.reset_button = W.Button(
            description="↺ reset to selected",
            tooltip="Drop the edits: show the selected frame's settings again",
            layout=W.Layout(width="auto", display="none"),
        )
        self.reset_button.on_click(lambda _: self.reset())
        self.keep_edits = W.Checkbox(
            value=False,
            description="keep my edits",
            indent=False,
            tooltip="Selecting another frame keeps the edits (on top of that frame's settings)",
            layout=W.Layout(width="auto"),
        )
        self.edit_bar = W.VBox(
            [
                W.HBox(
                    [self.source, self.reset_button, self.keep_edits],
                    layout=W.Layout(align_items="center", gap="8px", flex_flow="row wrap"),
                ),
                self.changes_line,
            ]
        )
        self.edit_bar.add_class("sw-editbar")
        self.children = [self.edit_bar, prompts, self.sections, self.general_message]

        if params is not None:
            self.set_params(params)
        for control in self.controls.values():
            control.observe(self._on_change, "value")
        self.validate()

    # -- layout ----------------------------------------------------------------------------

    def _row(self, spec: ParamSpec) -> W.Widget:
        control = self.controls[spec.name]
        tooltip = f"{spec.help} Allowed: {spec.allowed()}."
        control.tooltip = tooltip
        label = W.HTML(
            f"<span class='sw-label' title='{html.escape(tooltip, quote=True)}'>"
            f"{html.escape(spec.name)}</span>",
            layout=W.Layout(width=_LABEL_WIDTH, min_width=_LABEL_WIDTH),
        )
        if spec.kind == "keyframes":
            top = W.VBox([label, control], layout=W.Layout(width="100%"))
        else:
            top = W.HBox([label, control], layout=W.Layout(width="100%", align_items="center"))
        row = W.VBox([top, self.messages[spec.name]], layout=W.Layout(width="100%"))
        row.add_class("sw-field")
        return row

    def _make_preset_row(self) -> W.Widget:
        """The preset menu's row, and the few-steps note under cfg."""
        # Few steps meeting a high cfg: one line under cfg (see `_show_few_steps_note`).
        self._guidance_distilled = False
        self.few_steps_note = W.HTML(layout=W.Layout(display="none", margin="0 0 2px 0"))
        self.rows["cfg"].children += (self.few_steps_note,)

        self.preset = W.Dropdown(
            options=[("none", ""), *((name, name) for name in PRESETS)],
            value="",
            tooltip="Fill steps, cfg, sampler and scheduler as a few-step model's authors "
            "recommend (toy-live: the toy model's faithful few-step settings)",
            layout=W.Layout(width="auto"),
        )
        self.preset.observe(self._on_preset, "value")
        self.preset_info = W.HTML(layout=W.Layout(margin="0 0 2px 0"))
        preset_row = W.VBox(
            [
                W.HBox(
                    [
                        W.HTML(
                            "<span class='sw-label'>preset</span>",
                            layout=W.Layout(width=_LABEL_WIDTH, min_width=_LABEL_WIDTH),
                        ),
                        self.preset,
                    ],
                    layout=W.Layout(width="100%", align_items="center"),
                ),
                self.preset_info,
            ],
            layout=W.Layout(width="100%"),
        )
        preset_row.add_class("sw-field")
        return preset_row

    def fit_to(self, pipe) -> None:
        """Show only the fields ``pipe`` reads: ``flux_guidance`` only for a transformer with
        guidance embeddings (Flux dev). A hidden field keeps its value and is still validated.

        Example:
            >>> from seqwidgets.testing import tiny_pipeline
            >>> panel = ControlPanel()
            >>> panel.fit_to(tiny_pipeline("sd3")); panel.rows["flux_guidance"].layout.display
            'none'
            >>> panel.fit_to(tiny_pipeline("flux")); panel.rows["flux_guidance"].layout.display
        """
        from seqwidgets.families import detect_family

        try:
            guided = pipe is not None and detect_family(pipe).guidance_embeds
            self._guidance_distilled = guided
        except ValueError:  # a stand-in pipeline: show everything
            guided = True
            self._guidance_distilled = False
        self.rows["flux_guidance"].layout.display = None if guided else "none"
        self.validate()  # the few-steps note depends on the model

    # -- values ----------------------------------------------------------------------------

    def values(self) -> dict[str, Any]:
        """Every field's value as typed (not validated); a non-numeric int text raises."""
        return {name: _read(spec, self.controls[name]) for name, spec in PARAM_SPECS.items()}

    def set_params(self, params: SequenceParams) -> None:
        """Show ``params`` in the controls (and validate once)."""
        self._fill(
            {name: _shown(spec, getattr(params, name)) for name, spec in PARAM_SPECS.items()}
        )

    def set_values(self, **values: Any) -> None:
        """Set some fields by name (unknown names raise ``ValueError``); validates."""
        unknown = [name for name in values if name not in PARAM_SPECS]
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; known: {', '.join(PARAM_SPECS)}")
        self._fill({name: _shown(PARAM_SPECS[name], value) for name, value in values.items()})

    def _fill(self, shown: dict[str, Any]) -> None:
        """Put values in the controls as they show them, then validate once (not per field)."""
        self._quiet = True
        try:
            for name, value in shown.items():
                self.controls[name].value = value
        finally:
            self._quiet = False
        self.validate()

    # -- the selected frame's settings and the edits against them -------------------------

    def load(self, reference: SequenceParams | None, source: str = "") -> None:
        """Show ``reference`` (the selected frame's settings) and measure edits against it.

        With `keep_edits` ticked, fields typed differently from the previous reference keep
        their typed value on top of ``reference``; otherwise every field shows ``reference``.
        ``None`` keeps the fields as they are and highlights nothing. ``source`` names where
        the settings come from (shown above the prompts).
        """
        edits = self.edits() if self.keep_edits.value else {}
        self.reference = reference
        self.source.value = (
            "<span class='sw-muted'>settings for a new run</span>"
            if reference is None
            else f"<span class='sw-muted'>settings of</span> <b>{html.escape(source)}</b>"
        )
        if reference is None:
            self.validate()
            return
        shown = {name: _shown(spec, getattr(reference, name)) for name, spec in PARAM_SPECS.items()}
        self._fill({**shown, **edits})

    def follow(self, branch) -> None:
        """`load` the settings of a session's `Branch`, unless they are the reference already
        (scrubbing along one branch keeps the edits typed meanwhile); ``None``: no reference."""
        if branch is None:
            if self.reference is not None:
                self.load(None)
        elif self.reference is not branch.params:
            self.load(branch.params, source=branch.name)

    def reset(self) -> None:
        """Drop the edits: show `reference` again (nothing happens without one)."""
        if self.reference is not None:
            self.set_params(self.reference)

    def edits(self) -> dict[str, Any]:
        """Each field whose control differs from `reference`, with the control's raw value."""
        if self.reference is None:
            return {}
        return {
            name: self.controls[name].value
            for name, spec in PARAM_SPECS.items()
            if self.controls[name].value != _shown(spec, getattr(self.reference, name))
        }

    def changes(self) -> dict[str, tuple[Any, Any]]:
        """``{field: (selected value, edited value)}`` for every edited field.

        The edited value is the field's Python value, or the raw text while it is not a number.
        """
        changes = {}
        for name, raw in self.edits().items():
            spec = PARAM_SPECS[name]
            try:
                value = _read(spec, self.controls[name])
            except ValueError:
                value = raw
            changes[name] = (getattr(self.reference, name), value)
        return changes

    def _mark_changes(self) -> None:
        changes = self.changes()
        for name, row in self.rows.items():
            if name in changes:
                row.add_class("sw-changed")
            else:
                row.remove_class("sw-changed")
        text = describe_changes(changes)
        self.changes_line.value = (
            f"<div class='sw-changes'><b>Branch will change:</b> {html.escape(text)}</div>"
            if text
            else ""
        )
        self.changes_line.layout.display = None if text else "none"
        self.reset_button.layout.display = None if text else "none"

    @property
    def init_image(self):
        """The uploaded init image (a PIL RGB image), or ``None``."""
        return self._init_image

    def set_init_image(self, image) -> None:
        """Use ``image`` (PIL) as loop 0's input, or clear it with ``None``."""
        self._init_image = None if image is None else image.convert("RGB")
        if self._init_image is None:
            self.init_status.value = "<span class='sw-muted'>none: loop 0 starts from noise</span>"
        else:
            w, h = self._init_image.size
            hint = (
                ""
                if self.params is None or self.params.denoise_start < 1
                else (" <b>set denoise_start &lt; 1 to keep some of it</b>")
            )
            self.init_status.value = f"<span class='sw-muted'>{w}&times;{h} image{hint}</span>"

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        from PIL import Image

        try:
            item = files[0]
            image = Image.open(io.BytesIO(bytes(item["content"])))
            image.load()
        except Exception as exc:  # a corrupt or non-image file: say so, keep the panel usable
            self._clear_init()
            self.init_status.value = (
                f"<span class='sw-error'>cannot read that image: {html.escape(str(exc))}</span>"
            )
            return
        self.set_init_image(image)

    def _clear_init(self) -> None:
        self.init_upload.value = ()
        self.set_init_image(None)

    # -- validation ------------------------------------------------------------------------

    def _show_sampler(self, _change=None) -> None:
        line = sampler_line(self.controls["sampler_name"].value)
        self.sampler_info.value = f"<span class='sw-muted'>{html.escape(line)}</span>"

    def _on_change(self, _change) -> None:
        if not self._quiet:
            self.validate()

    def _on_preset(self, change) -> None:
        name = change["new"]
        if name:
            preset = PRESETS[name]
            self.set_values(**preset.settings())
            self.preset_info.value = (
                f"<span class='sw-muted' title='{html.escape(preset.source, quote=True)}'>"
                f"{html.escape(preset.describe())}</span>"
            )
        else:
            self.preset_info.value = ""

    def _follow_preset(self, values: dict[str, Any]) -> None:
        """Back to "none" once steps, cfg, sampler or scheduler no longer match the preset."""
        name = self.preset.value
        if name and any(values.get(k) != v for k, v in PRESETS[name].settings().items()):
            self.preset.value = ""

    def _show_few_steps_note(self, values: dict[str, Any]) -> None:
        """Show `FEW_STEPS_NOTE` while steps <= 8 meet cfg >= 4 (``values``: the valid fields),
        unless the model is guidance-distilled (Flux dev: its guidance is ``flux_guidance``)."""
        steps, cfg = values.get("steps"), values.get("cfg")
        show = (
            not self._guidance_distilled
            and isinstance(steps, int)
            and isinstance(cfg, float)
            and steps <= FEW_STEPS
            and cfg >= HIGH_CFG
        )
        self.few_steps_note.value = (
            f"<div class='sw-warning'>{html.escape(FEW_STEPS_NOTE)}</div>" if show else ""
        )
        self.few_steps_note.layout.display = None if show else "none"

    def validate(self) -> SequenceParams | None:
        """Check every field, show each message next to its field, update `params` / `error`.

        Each field is checked on its own first (so several bad fields all show at once), then the
        whole `SequenceParams` (keyframe syntax, fields that exclude each other). Warnings, such
        as a keyframe the loop count never reaches, show in amber and do not block a run.
        """
        errors: dict[str, str] = {}
        values: dict[str, Any] = {}
        for name, spec in PARAM_SPECS.items():
            try:
                values[name] = spec.validate(_read(spec, self.controls[name]))
            except ValueError as exc:
                errors[name] = str(exc)
        notes: dict[str, str] = {}
        params = None
        general = ""
        if not errors:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    params = SequenceParams(**values)
                except ValueError as exc:
                    field = getattr(exc, "field", None)
                    if field in PARAM_SPECS:
                        errors[field] = str(exc)
                    else:
                        general = str(exc)
            for warning in caught:
                field = getattr(warning.message, "field", None)
                if field in PARAM_SPECS:
                    notes[field] = str(warning.message)
        for name, box in self.messages.items():
            if name in errors:
                box.value = f"<div class='sw-error'>{html.escape(errors[name])}</div>"
            elif name in notes:
                box.value = f"<div class='sw-warning'>{html.escape(notes[name])}</div>"
            else:
                box.value = ""
            box.layout.display = None if box.value else "none"
        self.general_message.value = (
            f"<div class='sw-error'>{html.escape(general)}</div>" if general else ""
        )
        self.general_message.layout.display = None if general else "none"
        self._mark_sections(errors)
        self._mark_changes()
        self._show_few_steps_note(values)
        self._follow_preset(values)
        first = next(iter(errors.values()), general)
        self.error = first
        self.params = params
        return params

    def _mark_sections(self, errors: dict[str, str]) -> None:
        bad = {self._group_of.get(name) for name in errors}
        titles = tuple(f"⚠ {title}" if title in bad else title for title in self._section_titles)
        if tuple(self.sections.titles) != titles:
            self.sections.titles = titles
        for i, title in enumerate(self._section_titles):
            if title in bad:
                self.sections.selected_index = i
                break

    def set_enabled(self, enabled: bool) -> None:
        """Enable or disable the init image upload (the studio locks it during a run)."""
        self.init_upload.disabled = not enabled
        self.init_clear.disabled = not enabled
