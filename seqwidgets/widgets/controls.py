"""The studio's composite widgets: the transport bar (buttons and progress), the frame view
(preview, details, the full-VAE decode) and the error area. They keep no state beyond what they
show (and the frame view's last live estimate, to decode it); the studio wires them to the session.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable

import ipywidgets as W
from PIL import Image

from seqwidgets.decode import decode_latents, thumbnail
from seqwidgets.export import EXPORT_FORMATS

from . import render
from .jobs import Job
from .live import LivePreview

__all__ = [
    "ErrorArea",
    "FrameView",
    "Header",
    "Transport",
    "card",
    "close_all",
    "on_click",
    "studio_layout",
]


def card(widget: W.Widget) -> W.Widget:
    """``widget`` drawn as a card (a bordered panel of the studio)."""
    widget.add_class("sw-card")
    return widget


def on_click(button: W.Button, action: Callable, on_error: Callable[[BaseException, str], None]):
    """Call ``action()`` on a click of ``button``; what it raises goes to
    ``on_error(exc, traceback_text)``, never into the front end."""

    def click(_button) -> None:
        try:
            action()
        except Exception as exc:
            on_error(exc, traceback.format_exc())

    button.on_click(click)


def _button(description: str, tooltip: str, width: str, style: str = "") -> W.Button:
    return W.Button(
        description=description,
        tooltip=tooltip,
        button_style=style,
        layout=W.Layout(width=width),
    )


class Transport(W.VBox):
    """Run, Stop, Branch, Re-run and Export, the export format, and the progress of a job.

    Attributes:
        run_button, stop_button, branch_button, rerun_button, export_button (`Button`).
        delete_button (`Button`): deletes the selected branch (the studio shows it beside the
            timeline's branch menu).
        export_format (`Dropdown`): the format Export writes.
        progress_bar (`FloatProgress`), progress_text (`HTML`): how far the job is.
    """

    def __init__(self):
        super().__init__()
        self.run_button = _button("▶ Run", "Run the settings from loop 0", "96px", "primary")
        self.stop_button = _button(
            "■ Stop", "Stop at the next model step; finished frames stay", "86px", "danger"
        )
        self.branch_button = _button(
            "↳ Branch",
            "Continue after the selected frame with the panel's settings (a new row from the "
            "next loop, sharing every loop up to the frame)",
            "104px",
        )
        self.rerun_button = _button(
            "↻ Re-run",
            "Compute the selected loop again, and the loops after it, with the panel's settings "
            "(a new row from that loop)",
            "96px",
        )
        self.export_format = W.Dropdown(
            options=[(label, name) for name, (label, _) in EXPORT_FORMATS.items()],
            value="gif",
            tooltip="Export format",
            layout=W.Layout(width="130px"),
        )
        self.export_button = _button(
            "⤓ Export", "Write the selected branch up to the selected loop", "92px"
        )
        self.delete_button = W.Button(
            description="✕ Delete branch",
            tooltip="Delete the selected branch (not the frames it shares with its parent)",
            layout=W.Layout(width="auto"),
        )
        self.progress_bar = W.FloatProgress(
            value=0, min=0, max=1, bar_style="info", layout=W.Layout(width="100%", height="10px")
        )
        self.progress_text = W.HTML("<span class='sw-progress sw-muted'>ready</span>")
        row = W.Layout(gap="6px", align_items="center", flex_flow="row wrap")
        buttons = W.HBox(
            [
                W.HBox([self.run_button, self.stop_button], layout=row),
                W.HBox([self.branch_button, self.rerun_button], layout=row),
                W.HBox([self.export_format, self.export_button], layout=row),
            ],
            layout=W.Layout(gap="18px", align_items="center", flex_flow="row wrap"),
        )
        self.live_bar = LiveBar()
        self.children = [buttons, self.live_bar, self.progress_bar, self.progress_text]
        card(self)

    def connect(self, on_error: Callable[[BaseException, str], None], **actions) -> None:
        """Call ``actions["run"](wait=False)`` on a click of Run, and so on for ``branch``,
        ``rerun``, ``export`` and ``delete``; ``stop()`` on Stop. A button callback never raises
        into the front end: what went wrong goes to ``on_error(exc, traceback_text)``.
        """

        for name, action in actions.items():
            if name == "stop":
                self.stop_button.on_click(lambda _, action=action: action())
            else:
                button = getattr(self, f"{name}_button")
                on_click(button, lambda action=action: action(wait=False), on_error)

    def enable(
        self, *, busy: bool, valid: bool, frame: bool, selected: bool, error: str = ""
    ) -> None:
        """Enable what can be pressed: during a job only Stop; Branch, Re-run and Export need a
        computed frame selected, Delete a selection; Run and the forks need valid settings
        (``error`` says why not).
        """
        self.delete_button.disabled = busy or not selected
        self.run_button.disabled = busy or not valid
        self.stop_button.disabled = not busy
        self.branch_button.disabled = self.rerun_button.disabled = busy or not valid or not frame
        self.export_button.disabled = busy or not frame
        self.export_format.disabled = busy
        tip = "" if valid else f" (invalid settings: {error})"
        self.run_button.tooltip = "Run the settings from loop 0" + tip

    def show(self, job: Job, note: str | None = None) -> None:
        """Show how far ``job`` is (``note``: a few words in front, e.g. how it ended)."""
        if job.fork is not None:
            self.progress_bar.value = min(job.done_steps / job.total_steps, 1.0)
        elif job.finished and job.error is None:
            self.progress_bar.value = 1.0
        self.progress_bar.bar_style = render.bar_style(job)
        self.progress_text.value = render.progress_html(job, time.monotonic(), note)


class LiveBar(W.HBox):
    """Live drafts: the toggle, Keep and Discard, and a line saying what the draft is.

    Attributes:
        toggle (`ToggleButton`): live on or off.
        draft_steps (`Dropdown`): the model steps a draft runs, ``0`` for the branch's own
            (`Studio.draft_steps` says ``None``).
        keep_button, discard_button (`Button`): keep the draft as a branch, or drop it.
        note (`HTML`): the draft's state ("drafting…", its changes, an error).
    """

    #: The draft steps offered (any other one `Studio.draft_steps` is given is added).
    DRAFT_STEPS = (1, 2, 3, 4, 6, 8, 10, 12, 16, 20)

    def __init__(self):
        super().__init__()
        self.toggle = W.ToggleButton(
            value=False,
            description="● Live",
            tooltip="Re-render a draft from the selected frame on every settings change",
            layout=W.Layout(width="86px"),
        )
        self.keep_button = _button(
            "✓ Keep draft", "Keep the draft as an ordinary branch", "110px", "success"
        )
        self.draft_steps = W.Dropdown(
            options=[("as the branch", 0)] + [(str(n), n) for n in self.DRAFT_STEPS],
            value=0,
            description="draft steps",
            tooltip="Draft with fewer model steps, for speed; Keep then renders the branch "
            "at its full steps",
            layout=W.Layout(width="200px"),
            style={"description_width": "72px"},
        )
        self.discard_button = _button("✕ Discard", "Drop the draft", "92px")
        self.note = W.HTML("<span class='sw-muted'>live off</span>")
        self.children = [
            self.toggle,
            self.draft_steps,
            self.keep_button,
            self.discard_button,
            self.note,
        ]
        self.layout = W.Layout(gap="6px", align_items="center", flex_flow="row wrap")
        self.add_class("sw-livebar")
        self.enable(draft=False)

    def enable(self, draft: bool) -> None:
        """Keep and Discard need a draft."""
        self.keep_button.disabled = self.discard_button.disabled = not draft

    def say(self, html: str) -> None:
        self.note.value = html

    def show_draft_steps(self, steps: int | None) -> None:
        """Show ``steps`` (``None``: the branch's own) in the menu, adding it when missing."""
        value = steps or 0
        if value not in [v for _, v in self.draft_steps.options]:
            offered = sorted({*self.DRAFT_STEPS, value})
            self.draft_steps.options = [("as the branch", 0)] + [(str(n), n) for n in offered]
        self.draft_steps.value = value


class Header(W.HBox):
    """The studio's title line (the model, any mode to know about) and its status chip."""

    def __init__(self):
        self.title = W.HTML()
        self.status = W.HTML(render.status_html("idle"))
        super().__init__(
            [self.title, self.status],
            layout=W.Layout(justify_content="space-between", margin="0 0 6px 0"),
        )

    def describe(self, pipe, threaded: bool, renderer: str, preview: str = "") -> None:
        """Name the model (``None``: the toy model, loaded on the first run), its live preview
        (the previewer's note) and the modes."""
        model = render.model_description(pipe)
        self.title.value = render.header_html(model, threaded, renderer, preview)

    def set_state(self, state: str) -> None:
        """``idle``, ``running``, ``stopping``, ``stopped`` or ``error``."""
        self.status.value = render.status_html(state)


class ErrorArea(W.VBox):
    """An error with its traceback folded, and a Dismiss button; hidden while there is none."""

    def __init__(self):
        super().__init__(layout=W.Layout(display="none"))
        self.html = W.HTML()
        self.dismiss_button = W.Button(description="Dismiss", layout=W.Layout(width="90px"))
        self.dismiss_button.on_click(lambda _: self.clear())
        self.children = [self.html, self.dismiss_button]

    def show(self, exc: BaseException, text: str) -> None:
        """Show ``exc`` and its traceback ``text``."""
        self.html.value = render.error_html(exc, text)
        self.layout.display = None

    def clear(self) -> None:
        """Hide the error."""
        self.layout.display = "none"
        self.html.value = ""


class FrameView(W.HBox):
    """The large preview of the selected frame (or the live estimate) beside its details, and
    the "Decode with full VAE" button.

    Args:
        preview: a `CanvasPreview` or an `ImagePreview`.
        live_preview (`str`, *optional*): the `LivePreview` to make (``None``: `make_previewer`'s
            default).
    """

    def __init__(self, preview, live_preview: str | None = None):
        self.preview = preview
        self.live = LivePreview(live_preview)
        self.info = W.HTML(render.EMPTY_INFO_HTML, layout=W.Layout(width="100%"))
        self.decode_button = W.Button(
            description="Decode with full VAE",
            tooltip="Decode the live estimate (a loop running or stopped mid-way) with the "
            "pipeline's full VAE; without one, the selected frame",
            disabled=True,
            layout=W.Layout(width="auto", align_self="flex-start"),
        )
        self._decodes = 0  # each full decode of an estimate is a new picture for the preview
        preview.layout = W.Layout(flex="0 0 auto")
        details = W.VBox([self.info, self.decode_button], layout=W.Layout(width="100%", gap="6px"))
        super().__init__([preview, details], layout=W.Layout(gap="14px"))
        card(self)

    def show(self, session, branch, index: int, decoded: str = "") -> None:
        """Loop ``index`` of ``branch``: decoded, with the settings of the branch that made it
        (``decoded``: a badge naming the decoder, when the user asked for a decode)."""
        try:
            frame = session.frame(branch, index)
        except (IndexError, ValueError):
            self.info.value = render.missing_info_html(branch.name, index)
            return
        image = session.image(branch, index)
        owner = branch.owner(index)
        self.preview.show_image((owner.id, index), image)
        self.info.value = render.frame_info_html(owner, frame, image.size, decoded)

    def show_selection(self, session, selected) -> None:
        """The ``selected`` ``(branch, index)`` frame of ``session``, or an empty preview."""
        if selected is None or session is None:
            self.clear()
        else:
            self.show(session, *selected)

    def show_live(self, pipe, denoised, loop: int, step: int, params) -> None:
        """The live preview of ``denoised`` (the model's estimate of loop ``loop`` at ``step``),
        stretched over the frame; the previous picture stays when the previewer skips a step.

        Only a small picture travels: the previewer's own (a latent-sized latent-to-RGB map),
        shrunk to the preview box when larger (a TAESD decode); the browser scales it up.
        """
        image = self.live(denoised, loop=loop, step=step, params=params)
        self.decode_button.disabled = False
        if image is None:
            return
        if max(image.size) > self.preview.size:
            image = thumbnail(image, self.preview.size)
        scale = pipe.vae_scale_factor  # latent pixels to image pixels
        self.preview.show_live(image, (denoised.shape[-1] * scale, denoised.shape[-2] * scale))
        self.info.value = render.live_info_html(loop, step, params, self.live.kind)

    def decode_full(self, session, selected) -> Image.Image:
        """Decode the held live estimate with the pipeline's VAE, or, with none held, the
        ``selected`` ``(branch, index)`` frame; show it labelled with what it is, and return it.
        """
        held = self.live.held
        if held is not None and session is not None:
            image = decode_latents(session.pipe.vae, held.latent)[0]
            self._decodes += 1
            self.preview.show_image(("full VAE", self._decodes), image)
            self.info.value = render.full_vae_info_html(held.loop, held.step, held.params)
            return image
        if selected is None or session is None:
            raise ValueError("nothing to decode yet: run, or select a computed frame")
        self.show(session, *selected, decoded="full VAE")
        return session.image(*selected)

    def enable(self, frame: bool) -> None:
        """Decoding needs a live estimate held or a computed frame selected."""
        self.decode_button.disabled = not (frame or self.live.held is not None)

    def clear(self) -> None:
        """Nothing selected: an empty preview and a word on what to do."""
        self.preview.clear()
        self.info.value = render.EMPTY_INFO_HTML


def studio_layout(css: str, header, panel, views, transport, errors, timeline, strip) -> list:
    """The studio's children: the style and the header; the settings card beside the preview
    (or compare) tabs, the transport bar and the error area; the timeline with the metrics strip
    under it, in one card so that their columns line up."""
    right = W.VBox(
        [views, transport, errors], layout=W.Layout(flex="1 1 auto", gap="8px", min_width="0")
    )
    left = card(W.VBox([panel], layout=W.Layout(width="410px", min_width="410px")))
    return [
        W.HTML(f"<style>{css}</style>"),
        header,
        W.HBox([left, right], layout=W.Layout(gap="10px", align_items="flex-start")),
        card(W.VBox([timeline, strip], layout=W.Layout(margin="8px 0 0 0"))),
    ]


def close_all(widget: W.Widget) -> None:
    """Close every widget inside ``widget`` (not ``widget`` itself), with the hidden canvases that
    no box holds: a widget's ``sources`` (thumbnail pixels) and ``layers`` (canvas layers)."""
    for child in getattr(widget, "children", ()):
        close_all(child)
        child.close()
    for hidden in (*getattr(widget, "sources", {}).values(), *getattr(widget, "layers", ())):
        hidden.close()
