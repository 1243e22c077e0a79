"""The studio on every model family, headless: SD3 and Flux runs and branches, the header (family,
LoRA adapters, preview), the live preview through `make_previewer` (TAESD falling back offline,
skipped and failing previewers) and the "Decode with full VAE" action on a live estimate."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from diffusers import AutoencoderTiny
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import seqwidgets as sw
from seqwidgets.decode import decode_latents
from seqwidgets.testing import tiny_pipeline
from seqwidgets.widgets import Studio
from seqwidgets.widgets.jobs import Job

FAST = dict(steps=2, sequence_loop_count=3, positive_seq="0: a red circle\n2: a blue square")
LABELS = {"sd3": "Stable Diffusion 3", "flux": "Flux"}


def live_images(studio) -> list:
    """Record the pictures the studio hands its preview widget as live estimates."""
    shown = []
    show_live = studio.view.preview.show_live

    def record(image, size):
        shown.append((image, size))
        show_live(image, size)

    studio.view.preview.show_live = record
    return shown


@pytest.fixture
def every_step(monkeypatch):
    """A live preview at every model step (the studio draws at most 4 a second; the tiny
    pipelines run faster than that)."""
    monkeypatch.setattr(Job, "due", lambda self, what, now, every: True)


def make_studio(pipe, **options) -> Studio:
    return Studio(pipe, params=sw.SequenceParams(**FAST), threaded=False, **options)


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_studio_runs_branches_and_previews_on_flow_families(kind):
    pipe = tiny_pipeline(kind)
    studio = make_studio(pipe)
    title = studio.header.title.value
    assert LABELS[kind] in title and "64×64 · cpu · float32" in title
    assert "latent-to-RGB preview" in title
    shown = live_images(studio)

    run = studio.run(wait=True)
    assert run.is_complete and run.indices == [0, 1, 2]
    assert studio.last_error is None and studio.error_area.layout.display == "none"
    # The live preview showed 16-channel estimates: latent-sized pictures, stretched over 64 px.
    assert shown, "no live preview during the run"
    image, size = shown[0]
    assert image.size == (8, 8) and size == (64, 64)
    assert len(set(image.getdata())) > 1, "a flat picture is no preview"
    assert studio.view.preview.live_source.width == 8  # only the latent-sized picture travels

    studio.select(run, 1)
    alt = studio.branch(denoise_seq=0.3)
    assert alt.fork == 2 and alt.params.denoise_seq == 0.3
    assert studio.session.frame(alt, 1) is studio.session.frame(run, 1)  # shared loops
    assert not torch.equal(studio.session.frame(alt, 2).latent, studio.session.frame(run, 2).latent)
    assert studio.view.preview.showing == (alt.id, 2), "the branch's last frame is shown"
    studio.close()


def test_header_lists_the_lora_adapters(tmp_path):
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from seqwidgets.families import detect_family

    pipe = tiny_pipeline("flux")
    family = detect_family(pipe)
    network = family.denoiser_network(pipe)
    torch.manual_seed(1)
    network.add_adapter(
        LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k"], init_lora_weights=False)
    )
    layers = {f"{family.network}_lora_layers": get_peft_model_state_dict(network)}
    type(pipe).save_lora_weights(tmp_path, safe_serialization=True, **layers)

    loaded = sw.load_pipeline(tiny_pipeline("flux"), device="cpu", lora=[(tmp_path, 0.8)])
    studio = make_studio(loaded)
    assert "Flux" in studio.header.title.value
    assert "LoRA: lora_0 0.8" in studio.header.title.value
    assert "LoRA" not in make_studio(tiny_pipeline("flux")).header.title.value


def test_taesd_offline_falls_back_to_latent_rgb_with_a_note(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("cannot reach the hub")

    monkeypatch.setattr(AutoencoderTiny, "from_pretrained", offline)
    # the host answers; the download itself fails (an unreachable host is found sooner)
    monkeypatch.setattr("seqwidgets.decode.host_reachable", lambda address: True)
    studio = make_studio(tiny_pipeline("sd3"), preview="taesd")
    title = studio.header.title.value
    assert "TAESD preview unavailable (cannot reach the hub)" in title
    assert "latent-to-RGB preview" in title
    shown = live_images(studio)
    assert studio.run(wait=True).is_complete
    assert shown and shown[0][0].size == (8, 8), "the latent-to-RGB preview took over"


def test_taesd_preview_is_shown_no_larger_than_the_preview_box(monkeypatch):
    """A TAESD decode is image-sized: it travels shrunk to the preview box, never larger."""
    tiny = AutoencoderTiny(
        encoder_block_out_channels=(8,) * 4,
        decoder_block_out_channels=(8,) * 4,
        num_encoder_blocks=(1,) * 4,
        num_decoder_blocks=(1,) * 4,
        latent_channels=16,
    )
    monkeypatch.setattr(AutoencoderTiny, "from_pretrained", lambda *a, **k: tiny)
    studio = make_studio(tiny_pipeline("flux"), preview="taesd", preview_size=32)
    assert "TAESD preview" in studio.header.title.value
    assert "unavailable" not in studio.header.title.value
    shown = live_images(studio)
    studio.view.live.previewer.min_interval = 0.0  # every live call decodes
    assert studio.run(wait=True).is_complete
    assert shown and all(image.size == (32, 32) for image, _ in shown)
    assert studio.view.live.kind == "TAESD"


def test_an_unknown_preview_name_is_refused():
    with pytest.raises(ValueError, match="preview"):
        make_studio(tiny_pipeline("sd3"), preview="sharpest")


def test_a_previewer_returning_none_is_skipped(every_step):
    studio = make_studio(tiny_pipeline("flux"))
    studio.display.threaded = False  # each preview made and drawn in its step
    calls = []

    def every_other(latent):
        calls.append(tuple(latent.shape))
        return None if len(calls) % 2 else Image.new("RGB", (8, 8), (250, 10, 10))

    studio.view.live.previewer = every_other
    shown = live_images(studio)
    assert studio.run(wait=True, steps=3).is_complete
    assert len(calls) >= 2 and all(shape == (1, 16, 8, 8) for shape in calls)
    assert len(shown) == len(calls) // 2, "a None is not drawn"
    assert all(image.getpixel((0, 0)) == (250, 10, 10) for image, _ in shown)
    assert studio.last_error is None


def test_a_failing_previewer_turns_the_preview_off_with_a_note():
    studio = make_studio(tiny_pipeline("sd3"))
    calls = []

    def broken(latent):
        calls.append(1)
        raise RuntimeError("decoder exploded")

    studio.view.live.previewer = broken
    run = studio.run(wait=True)
    assert run.is_complete, "the run goes on without its preview"
    assert len(calls) == 1, "turned off after the first failure"
    assert "live preview off (RuntimeError: decoder exploded)" in studio.header.title.value
    assert studio.last_error is None and studio.error_area.layout.display == "none"


@pytest.mark.parametrize("kind", ["sd", "flux"])
def test_full_vae_decodes_the_estimate_of_a_stopped_loop(kind, every_step):
    pipe = tiny_pipeline(kind)
    studio = make_studio(pipe)
    studio.display.threaded = False  # each preview drawn in the step that made it
    button = studio.view.decode_button
    assert button.disabled, "nothing to decode before a run"
    show_live = studio.view.show_live

    def stop_in_loop_one(pipe, denoised, loop, step, params):
        show_live(pipe, denoised, loop, step, params)
        if loop == 1:
            studio.stop()

    studio.view.show_live = stop_in_loop_one
    run = studio.run(wait=True, steps=4)
    assert run.indices == [0], "stopped inside loop 1"
    held = studio.view.live.held
    assert held is not None and held.loop == 1
    assert not button.disabled

    button.click()  # as the browser's click does
    assert studio.last_error is None
    expected = np.asarray(decode_latents(pipe.vae, held.latent)[0])
    key = studio.view.preview.showing
    assert key[0] == "full VAE"
    source = studio.view.preview.sources[key]
    assert (source.width, source.height) == (64, 64), "the full-size decode, not a preview"
    assert np.array_equal(np.asarray(studio.decode_full()), expected)
    info = studio.view.info.value
    assert "loop 1" in info and f"full VAE · live estimate at step {held.step + 1}/4" in info

    # A finished run holds no estimate: the action decodes the selected frame, labelled so.
    studio.view.show_live = show_live
    done = studio.run(wait=True, steps=2)
    assert done.is_complete
    assert studio.view.live.held is None
    studio.select(done, 2)
    image = studio.decode_full()
    assert image is studio.session.image(done, 2)
    assert studio.view.preview.showing == (done.id, 2)
    assert "full VAE decode" in studio.view.info.value and "loop 2" in studio.view.info.value


def test_full_vae_without_anything_to_decode_says_so():
    studio = make_studio(tiny_pipeline("sd3"))
    with pytest.raises(ValueError, match="nothing to decode"):
        studio.decode_full()
    studio.view.decode_button.click()
    assert "nothing to decode" in studio.error_area.html.value


@given(note=st.text(min_size=1, max_size=400))
def test_header_shows_any_preview_note_escaped_and_at_most_120_characters(note):
    import html
    import re

    from seqwidgets.widgets.render import header_html

    text = header_html("Flux · 64×64", preview=note)
    shown = re.search(r"<span class='sw-note' title='(.*?)'>(.*?)</span>", text, re.S)
    assert shown is not None, "the note has its own span: no markup in it survives escaping"
    assert html.unescape(shown.group(1)) == note  # the whole note in the tooltip
    visible = html.unescape(shown.group(2))
    assert len(visible) <= 120
    assert visible == note or (visible.endswith("…") and note.startswith(visible[:-1]))


def test_decode_with_full_vae_while_a_background_run_goes_on(monkeypatch):
    """A click mid-run (the kernel thread) decodes the estimate being previewed; the run, on
    its own thread, carries on to the end."""
    pipe = tiny_pipeline("sd3")
    forward = pipe.transformer.forward

    def slow(*args, **kwargs):
        time.sleep(0.05)
        return forward(*args, **kwargs)

    monkeypatch.setattr(pipe.transformer, "forward", slow)
    studio = Studio(pipe, params=sw.SequenceParams(**FAST), threaded=True)
    studio.run(wait=False, steps=6)
    deadline = time.monotonic() + 30
    while studio.view.live.held is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert studio.view.live.held is not None and studio.running
    shown = []  # live previews may replace the decode at once: record what the click showed
    show_image = studio.view.preview.show_image
    studio.view.preview.show_image = lambda key, image: shown.append((key, image.size))
    studio.view.decode_button.click()
    studio.view.preview.show_image = show_image
    assert studio.last_error is None
    decodes = [size for key, size in shown if key[0] == "full VAE"]  # (a frame may land too)
    assert decodes == [(64, 64)]
    assert studio.wait(60)
    assert studio.session.branches[-1].is_complete and studio.last_error is None


@pytest.mark.parametrize(("kind", "shown"), [("sd", False), ("sd3", False), ("flux", True)])
def test_flux_guidance_shows_only_where_the_model_reads_it(kind, shown):
    studio = make_studio(tiny_pipeline(kind))
    row = studio.panel.rows["flux_guidance"]
    assert (row.layout.display != "none") is shown
    studio.panel.set_values(flux_guidance=2.0)  # hidden or not, it is kept and used
    assert studio.params.flux_guidance == 2.0
