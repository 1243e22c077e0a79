"""Presets for few-step models: valid settings, applied without touching the rest, in the CLI and
the panel."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import seqwidgets as sw
from seqwidgets.cli import build_parser, main, params_from_args
from seqwidgets.presets import PRESETS, apply, get_preset

SET_BY_A_PRESET = ("steps", "cfg", "sampler_name", "scheduler")


def test_every_preset_is_valid_settings_with_a_source():
    assert {"toy-live", "sdxl-turbo", "sd-turbo", "sdxl-lightning", "lcm", "flux-schnell"} <= set(
        PRESETS
    )
    assert {"flux2-klein", "z-image-turbo"} <= set(PRESETS)
    for name, preset in PRESETS.items():
        params = apply(sw.SequenceParams(), name)  # validated: a sampler off the menu raises
        assert preset.name == name
        assert (params.steps, params.cfg) == (preset.steps, preset.cfg)
        assert (params.sampler_name, params.scheduler) == (preset.sampler_name, preset.scheduler)
        # few steps and little guidance is what makes these models fast
        assert 1 <= preset.steps <= 8 and preset.cfg <= 2, name
        assert preset.source and "\n" not in preset.source, name


def test_the_distilled_families_follow_their_authors():
    assert PRESETS["sdxl-lightning"].settings() == {
        "steps": 4,
        "cfg": 1.0,
        "sampler_name": "euler",
        "scheduler": "sgm_uniform",
    }
    assert PRESETS["lcm"].sampler_name == "lcm" and 1 <= PRESETS["lcm"].cfg <= 2
    assert PRESETS["sdxl-turbo"].sampler_name == "euler_ancestral"
    assert (PRESETS["flux-schnell"].steps, PRESETS["flux-schnell"].scheduler) == (4, "simple")
    assert PRESETS["z-image-turbo"].steps == 8
    # the toy model's live preset: its few-step table's faithful settings, not the default cfg 8
    assert (PRESETS["toy-live"].steps, PRESETS["toy-live"].cfg) == (4, 1.0)


def test_toy_live_is_backed_by_the_toy_models_few_steps_table():
    from seqwidgets.models.toy import TOY_MODEL_PATH
    from seqwidgets.widgets.panel import FEW_STEPS, HIGH_CFG

    table = json.loads((TOY_MODEL_PATH.parent / "few_steps.json").read_text())
    cells = {(row["steps"], row["cfg"]): row for row in table["rows"]}

    def perfect(steps: int, cfg: float) -> bool:
        row = cells[(steps, cfg)]
        return row["loop0"][0] == row["loop0"][1] and row["later"][0] == row["later"][1]

    live = PRESETS["toy-live"]
    assert perfect(live.steps, live.cfg)  # every loop of every prompt on the asked colour
    # the panel's note: at few steps a high cfg loses colours, and cfg 1-2 does not
    few = [steps for steps, _ in cells if steps <= FEW_STEPS]
    assert few and any(not perfect(s, c) for s, c in cells if s <= FEW_STEPS and c >= HIGH_CFG)
    assert all(perfect(s, c) for s, c in cells if s in few and c <= 2)


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(sorted(PRESETS)),
    seed=st.integers(0, 2**64 - 1),
    loops=st.integers(1, 30),
    denoise=st.floats(0.05, 1.0),
    interp=st.booleans(),
)
def test_apply_keeps_every_other_setting(name, seed, loops, denoise, interp):
    params = sw.SequenceParams(
        seed=seed,
        sequence_loop_count=loops,
        denoise_seq=denoise,
        use_latent_interpolation=interp,
        positive_seq="0: a red circle",
        negative_seq="0: blurry",
        width=512,
        height=512,
    )
    out = apply(params, name)
    before, after = params.to_dict(), out.to_dict()
    for field in SET_BY_A_PRESET:
        assert after[field] == PRESETS[name].settings()[field]
        del before[field], after[field]
    assert before == after
    assert params.steps == 20  # the input is left as it was


def test_an_unknown_preset_is_one_line_listing_them():
    with pytest.raises(ValueError) as error:
        apply(sw.SequenceParams(), "sdxl-turob")
    message = str(error.value)
    assert "\n" not in message and "'sdxl-turob'" in message
    for name in PRESETS:
        assert name in message
    with pytest.raises(ValueError, match="allowed: toy-live"):
        get_preset("")


def test_sw_presets_is_the_module():
    assert sw.presets.PRESETS is PRESETS
    assert "presets" in dir(sw)


# --- the command line --------------------------------------------------------------------------


def _params(*argv: str) -> sw.SequenceParams:
    return params_from_args(build_parser().parse_args(["render", *argv]))


def test_cli_preset_sets_steps_cfg_sampler_and_scheduler():
    params = _params("--preset", "sdxl-lightning", "--seed", "5")
    assert (params.steps, params.cfg, params.sampler_name, params.scheduler) == (
        4,
        1.0,
        "euler",
        "sgm_uniform",
    )
    assert params.seed == 5


def test_cli_flags_override_the_preset_which_overrides_the_config(tmp_path):
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"steps": 30, "cfg": 6.0, "sampler_name": "heun", "seed": 9}))
    params = _params("--config", str(config), "--preset", "lcm", "--cfg", "2", "--sampler", "euler")
    assert params.steps == 4  # the preset's, over the file's 30
    assert params.cfg == 2.0 and params.sampler_name == "euler"  # the flags', over the preset's
    assert params.scheduler == "sgm_uniform" and params.seed == 9


def test_cli_unknown_preset_is_a_one_line_error(tmp_path, capsys):
    code = main(["render", "--model", "tiny-random", "--out", str(tmp_path), "--preset", "fast"])
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "'fast'" in err and "toy-live" in err
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_cli_help_lists_the_presets(capsys):
    with pytest.raises(SystemExit):
        main(["render", "--help"])
    # argparse wraps lines, at hyphens too: compare without any white space
    text = "".join(capsys.readouterr().out.split())
    assert "--presetNAME" in text
    for name, preset in PRESETS.items():
        assert "".join(f"{name} ({preset.describe()})".split()) in text
    assert "sdxl-turbo(1step,cfg1,euler_ancestral,normal)" in text


def test_cli_renders_with_a_preset(tmp_path):
    out = tmp_path / "run"
    argv = ["render", "--model", "tiny-random", "--out", str(out), "--quiet", "--loops", "2"]
    assert main([*argv, "--preset", "sdxl-turbo", "--positive", "0: a red circle"]) == 0
    saved = json.loads((out / "params.json").read_text())
    assert (saved["steps"], saved["cfg"], saved["sampler_name"]) == (1, 1.0, "euler_ancestral")


# --- the panel ---------------------------------------------------------------------------------


@pytest.fixture
def panel():
    from seqwidgets.widgets.panel import ControlPanel

    return ControlPanel(sw.SequenceParams(positive_seq="0: a red circle", seed=3))


def test_panel_preset_fills_steps_cfg_sampler_and_scheduler(panel):
    assert panel.preset.value == "" and panel.preset.options[0] == ("none", "")
    assert [value for _, value in panel.preset.options[1:]] == list(PRESETS)
    panel.preset.value = "flux-schnell"
    assert panel.params == apply(
        sw.SequenceParams(positive_seq="0: a red circle", seed=3), "flux-schnell"
    )
    assert "4 steps, cfg 1, euler, simple" in panel.preset_info.value
    # editing one of its fields leaves the preset: the menu says "none" again
    panel.controls["steps"].value = 6
    assert panel.preset.value == "" and panel.preset_info.value == ""
    assert panel.params.steps == 6 and panel.params.scheduler == "simple"


def test_panel_preset_is_one_settings_change(panel):
    seen = []
    panel.observe(lambda change: seen.append(change["new"]), "params")
    panel.preset.value = "lcm"
    assert len(seen) == 1 and seen[0].sampler_name == "lcm"  # one change, not four


def _note_shown(panel) -> bool:
    shown = panel.few_steps_note.layout.display != "none"
    assert shown == ("try cfg 1-2" in panel.few_steps_note.value)
    return shown


def test_panel_notes_few_steps_with_a_high_cfg(panel):
    assert not _note_shown(panel)  # 20 steps, cfg 8: the node's defaults
    panel.controls["steps"].value = 4
    assert _note_shown(panel)  # 4 steps, cfg 8
    panel.controls["cfg"].value = 2.0
    assert not _note_shown(panel)
    panel.controls["cfg"].value = 4.0
    assert _note_shown(panel)
    panel.controls["steps"].value = 9
    assert not _note_shown(panel)
    panel.set_values(steps=8, cfg=7.0)
    assert _note_shown(panel)
    panel.preset.value = "toy-live"
    assert not _note_shown(panel)


def test_panel_note_stays_off_for_a_guidance_distilled_model(panel):
    panel.set_values(steps=4, cfg=7.0)
    assert _note_shown(panel)
    panel.fit_to(sw.testing.tiny_pipeline("flux"))  # Flux dev: guidance is flux_guidance
    assert not _note_shown(panel)
    panel.fit_to(sw.testing.tiny_pipeline())
    assert _note_shown(panel)
