"""ComfyUI's whole menus, usable: grouped sampler menu with a line on the selected one, compact
lists in the CLI's help, every name through workflow import and export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seqwidgets.choices import (
    SAMPLER_GROUPS,
    SAMPLER_SPECS_BY_NAME,
    SAMPLERS,
    SCHEDULERS,
    sampler_line,
    sampler_menu,
    samplers_help,
)
from seqwidgets.params import SequenceParams

DATA = Path(__file__).parent / "data"


def test_the_menu_offers_every_sampler_once_with_the_common_ones_first():
    menu = sampler_menu()
    names = [name for _, name in menu]
    assert sorted(names) == sorted(SAMPLERS)
    groups = [SAMPLER_SPECS_BY_NAME[name].group for name in names]
    # groups come in SAMPLER_GROUPS order, "common" first and unlabelled
    assert groups == sorted(groups, key=SAMPLER_GROUPS.index)
    assert groups[0] == "common"
    for label, name in menu:
        group = SAMPLER_SPECS_BY_NAME[name].group
        assert label == (name if group == "common" else f"{group} · {name}")


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_has_one_line_saying_what_it_is(name):
    line = sampler_line(name)
    assert line.startswith(f"{name} · {SAMPLER_SPECS_BY_NAME[name].group} · ")
    assert "\n" not in line and len(line) < 200
    assert SAMPLER_SPECS_BY_NAME[name].summary in line


def test_the_help_lists_the_samplers_in_a_few_lines():
    text = samplers_help()
    assert len(text.splitlines()) <= len(SAMPLER_GROUPS)
    for name in SAMPLERS:
        assert f" {name}," in f" {text.replace(chr(10), ', ')}," or text.endswith(name)


def test_the_panel_menu_shows_the_selected_samplers_line_and_reads_back_its_name():
    from seqwidgets.widgets.panel import ControlPanel

    panel = ControlPanel()
    control = panel.controls["sampler_name"]
    assert [name for _, name in control.options] == [name for _, name in sampler_menu()]
    assert "euler · common" in panel.sampler_info.value
    control.value = "dpmpp_3m_sde_gpu"
    assert "dpmpp_3m_sde_gpu · SDE" in panel.sampler_info.value
    assert panel.params.sampler_name == "dpmpp_3m_sde_gpu"
    panel.load(SequenceParams(sampler_name="res_multistep_cfg_pp"), source="run 1")
    assert control.value == "res_multistep_cfg_pp"
    assert "CFG++" in panel.sampler_info.value


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_survives_a_comfy_workflow_round_trip(sampler):
    params = SequenceParams(sampler_name=sampler, scheduler=SCHEDULERS[len(sampler) % 9])
    again = SequenceParams.from_comfy(params.to_comfy("workflow"))
    assert (again.sampler_name, again.scheduler) == (params.sampler_name, params.scheduler)
    assert params.to_comfy("api")["sampler_name"] == sampler


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("sampler", ["uni_pc", "res_multistep", "er_sde", "dpmpp_2m_cfg_pp"])
def test_a_ui_workflow_from_comfyui_brings_every_menu_name(sampler, scheduler):
    # The saved UI workflow's KSamplerSeq widgets, with the names ComfyUI's menus offer today.
    workflow = json.loads((DATA / "ksamplerseq_ui.json").read_text(encoding="utf-8"))
    node = next(n for n in workflow["nodes"] if n["type"] == "KSamplerSeq")
    values = node["widgets_values"]
    values[values.index("dpmpp_2m")] = sampler
    values[values.index("karras")] = scheduler
    params = SequenceParams.from_comfy(workflow)
    assert (params.sampler_name, params.scheduler) == (sampler, scheduler)


def test_render_help_lists_the_samplers_by_group():
    from seqwidgets.cli import build_parser

    render = build_parser()._subparsers._group_actions[0].choices["render"]
    action = next(a for a in render._actions if a.dest == "sampler_name")
    assert "by group: common: euler, euler_ancestral" in action.help
    for name in SAMPLERS:
        assert name in action.help
    assert "'euler_cfg_pp'" not in action.help  # names, not 42 quoted reprs
