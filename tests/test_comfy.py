"""ComfyUI workflows <-> SequenceParams, on workflow files written by hand from the node's inputs."""

import copy
import json
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import seqwidgets as sw
from seqwidgets import comfy
from seqwidgets.errors import ParamWarning
from seqwidgets.params import PARAM_SPECS, SequenceParams

DATA = Path(__file__).parent / "data"
UI = DATA / "ksamplerseq_ui.json"
API = DATA / "ksamplerseq_api.json"

EXPECTED = sw.SequenceParams(
    seed=123456789,
    seed_mode_seq="decrement",
    alternate_values=False,
    steps=12,
    cfg=6.5,
    sampler_name="dpmpp_2m",
    scheduler="karras",
    sequence_loop_count=24,
    positive_seq="0:A portrait of a rosebud\n5:A portrait of a blooming rosebud\n"
    "10:A portrait of a blooming rose\n15:A portrait of a rose",
    negative_seq="0:blurry, lowres\n12:blurry, lowres, text",
    use_conditioning_slerp=True,
    cond_slerp_strength=0.25,
    use_latent_interpolation=True,
    latent_interpolation_mode="Slerp",
    latent_interp_strength=0.35,
    denoise_start=0.9,
    denoise_seq=0.45,
    unsample_latents=False,
    width=512,
    height=768,
)


def load(path):
    return json.loads(path.read_text())


def node(workflow, kind):
    (found,) = [n for n in workflow["nodes"] if n["type"] == kind]
    return found


def test_reads_the_ui_format_with_its_control_after_generate_value():
    assert sw.SequenceParams.from_comfy(UI) == EXPECTED
    assert sw.SequenceParams.from_comfy(str(UI)) == EXPECTED


def test_reads_the_api_format():
    assert sw.SequenceParams.from_comfy(API) == EXPECTED
    assert sw.SequenceParams.from_comfy(load(API)) == EXPECTED
    assert sw.SequenceParams.from_comfy(API.read_text()) == EXPECTED  # JSON text
    assert sw.SequenceParams.from_comfy({"prompt": load(API)}) == EXPECTED  # PNG-info wrapper


def test_ui_variants_without_control_value_with_dict_links_and_named_widgets():
    workflow = load(UI)
    values = node(workflow, "KSamplerSeq")["widgets_values"]
    del values[1]  # no control_after_generate
    assert sw.SequenceParams.from_comfy(workflow) == EXPECTED
    keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
    workflow["links"] = [dict(zip(keys, link, strict=True)) for link in workflow["links"]]
    assert sw.SequenceParams.from_comfy(workflow) == EXPECTED
    node(workflow, "KSamplerSeq")["widgets_values"] = dict(
        zip(comfy.NODE_WIDGETS, values, strict=True)
    )
    assert sw.SequenceParams.from_comfy(workflow) == EXPECTED


def test_writes_the_nodes_widgets_values_and_api_inputs():
    assert EXPECTED.to_comfy() == node(load(UI), "KSamplerSeq")["widgets_values"]
    assert EXPECTED.to_comfy(control_after_generate=None) == [
        getattr(EXPECTED, name) for name in comfy.NODE_WIDGETS
    ]
    api = load(API)["6"]["inputs"]
    assert EXPECTED.to_comfy("api") == {k: v for k, v in api.items() if not isinstance(v, list)}
    with pytest.raises(ValueError, match="control_after_generate"):
        EXPECTED.to_comfy(control_after_generate="random")
    with pytest.raises(ValueError, match="allowed: widgets, api, workflow"):
        EXPECTED.to_comfy("ui")


def test_a_complete_api_workflow_reads_back_to_the_same_params():
    workflow = EXPECTED.to_comfy("workflow")
    assert sw.SequenceParams.from_comfy(json.loads(json.dumps(workflow))) == EXPECTED
    default = sw.SequenceParams(positive_seq="0: a red circle\n# a comment\n3: a blue square")
    assert sw.SequenceParams.from_comfy(default.to_comfy("workflow")) == default.replace(
        width=512, height=512
    )
    with pytest.raises(ValueError, match="keyframe_interpolation"):
        default.replace(keyframe_interpolation="ease").to_comfy("workflow")


# Node inputs drawn within the node's ranges; floats on the widgets' grid of steps.
_NODE_FIELDS = {
    "seed": st.integers(0, 2**64 - 1),
    "seed_mode_seq": st.sampled_from(PARAM_SPECS["seed_mode_seq"].choices),
    "alternate_values": st.booleans(),
    "steps": st.integers(1, 10000),
    "cfg": st.integers(0, 200).map(lambda i: i / 2),
    "sampler_name": st.sampled_from(PARAM_SPECS["sampler_name"].choices),
    "scheduler": st.sampled_from(PARAM_SPECS["scheduler"].choices),
    "sequence_loop_count": st.integers(1, 1024),
    "use_conditioning_slerp": st.booleans(),
    "cond_slerp_strength": st.integers(0, 1000).map(lambda i: i / 1000),
    "use_latent_interpolation": st.booleans(),
    "latent_interpolation_mode": st.sampled_from(PARAM_SPECS["latent_interpolation_mode"].choices),
    "latent_interp_strength": st.integers(0, 1000).map(lambda i: i / 1000),
    "denoise_start": st.integers(0, 100).map(lambda i: i / 100),
    "denoise_seq": st.integers(0, 100).map(lambda i: i / 100),
    "unsample_latents": st.booleans(),
}


@settings(max_examples=60, deadline=None)
@given(st.fixed_dictionaries(_NODE_FIELDS))
def test_widgets_values_round_trip_through_a_ui_workflow(fields):
    params = sw.SequenceParams(**fields, positive_seq="0:a", negative_seq="", width=512, height=768)
    workflow = load(UI)
    node(workflow, "KSamplerSeq")["widgets_values"] = json.loads(json.dumps(params.to_comfy()))
    for n in workflow["nodes"]:
        if n["type"] == "CLIPTextEncodeList":
            n["widgets_values"][2] = params.positive_seq if n["id"] == 2 else params.negative_seq
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert sw.SequenceParams.from_comfy(workflow) == params


def test_a_workflow_without_the_node_is_a_clear_error():
    with pytest.raises(ValueError, match="no KSamplerSeq .*KSampler, SaveImage"):
        sw.SequenceParams.from_comfy(DATA / "txt2img_ui.json")
    api = {k: v for k, v in load(API).items() if v["class_type"] != "KSamplerSeq"}
    with pytest.raises(ValueError, match="API workflow has no KSamplerSeq"):
        sw.SequenceParams.from_comfy(api)
    with pytest.raises(ValueError, match="not a ComfyUI workflow"):
        sw.SequenceParams.from_comfy({"hello": "world"})
    with pytest.raises(ValueError, match="JSON object"):
        sw.SequenceParams.from_comfy([1, 2])


def test_several_nodes_need_a_node_id():
    api = load(API)
    api["9"] = copy.deepcopy(api["6"])
    api["9"]["inputs"]["steps"] = 3
    with pytest.raises(ValueError, match=r"2 KSamplerSeq nodes \(6, 9\); pass node_id"):
        sw.SequenceParams.from_comfy(api)
    assert sw.SequenceParams.from_comfy(api, node_id=9).steps == 3
    assert sw.SequenceParams.from_comfy(api, node_id="6") == EXPECTED
    with pytest.raises(ValueError, match="no KSamplerSeq node 4"):
        sw.SequenceParams.from_comfy(api, node_id=4)


def test_keyframe_inputs_must_come_from_a_sequence_encoder():
    workflow = load(UI)
    for item in node(workflow, "KSamplerSeq")["inputs"]:
        if item["name"] == "positive_seq":
            item["link"] = None
    with pytest.raises(ValueError, match="positive_seq is not connected"):
        sw.SequenceParams.from_comfy(workflow)
    api = load(API)
    api["6"]["inputs"]["negative_seq"] = ["4", 0]
    with pytest.raises(ValueError, match="negative_seq comes from a EmptyLatentImage node"):
        sw.SequenceParams.from_comfy(api)


def test_keyframe_lines_comfyui_skips_are_dropped_with_a_warning():
    api = load(API)
    api["2"]["inputs"]["text"] = "0:a red circle\nnot a keyframe\n  4:indented\n0:again\n6:a square"
    with pytest.warns(UserWarning, match="dropped 3 line"):
        params = sw.SequenceParams.from_comfy(api)
    assert params.positive_keyframes == [(0, "a red circle"), (6, "a square")]


def test_invalid_values_name_the_node_and_field():
    api = load(API)
    api["6"]["inputs"]["sampler_name"] = "not_a_sampler"
    with pytest.raises(ValueError, match="KSamplerSeq node 6: sampler_name: 'not_a_sampler'"):
        sw.SequenceParams.from_comfy(api)
    api = load(API)
    api["6"]["inputs"]["seed"] = ["10", 0]
    with pytest.raises(ValueError, match="'seed' is linked to node 10"):
        sw.SequenceParams.from_comfy(api)
    api = load(API)
    del api["6"]["inputs"]["cfg"]
    with pytest.raises(ValueError, match="input 'cfg' missing"):
        sw.SequenceParams.from_comfy(api)
    workflow = load(UI)
    node(workflow, "KSamplerSeq")["widgets_values"].pop()
    with pytest.raises(ValueError, match=r"expected 16 \(17 with control_after_generate\)"):
        sw.SequenceParams.from_comfy(workflow)
    workflow = load(UI)
    node(workflow, "KSamplerSeq")["widgets_values"][1] = "sometimes"
    with pytest.raises(ValueError, match="control_after_generate"):
        sw.SequenceParams.from_comfy(workflow)


def test_a_latent_from_another_node_is_left_to_the_caller():
    api = load(API)
    api["4"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["11", 0], "vae": ["1", 2]}}
    with pytest.warns(UserWarning, match="latent_image comes from a VAEEncode node"):
        params = sw.SequenceParams.from_comfy(api)
    assert params == EXPECTED.replace(width=None, height=None)


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"color_coherence": "lab"}, "color_coherence"), ({"flux_guidance": 2.0}, "flux_guidance")],
)
def test_our_settings_the_node_lacks_are_dropped_with_a_warning_naming_them(changes, field):
    params = SequenceParams(**changes)
    with pytest.warns(ParamWarning) as caught:
        values = params.to_comfy()
    assert [w.message.field for w in caught] == [field]
    assert values == SequenceParams().to_comfy()  # the node's inputs are untouched


def test_default_settings_export_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SequenceParams().to_comfy("api")
