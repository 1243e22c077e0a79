import dataclasses
import json
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqwidgets.choices import SAMPLERS, SCHEDULERS
from seqwidgets.errors import ParamError, ParamWarning
from seqwidgets.params import MAX_SCHEDULE_STEPS, PARAM_SPECS, SequenceParams

# The node's INPUT_TYPES, written out independently of PARAM_SPECS: (default, min, max).
NODE_NUMBERS = {
    "seed": (0, 0, 0xFFFFFFFFFFFFFFFF),
    "steps": (20, 1, 10000),
    "cfg": (8.0, 0.0, 100.0),
    "sequence_loop_count": (20, 1, 1024),
    "cond_slerp_strength": (0.5, 0.0, 1.0),
    "latent_interp_strength": (0.5, 0.0, 1.0),
    "denoise_start": (1.0, 0.0, 1.0),
    "denoise_seq": (0.5, 0.0, 1.0),
    "flux_guidance": (3.5, 0.0, 100.0),  # ComfyUI's FluxGuidance node (comfy_extras/nodes_flux.py)
}
NODE_DEFAULTS = {
    "seed_mode_seq": "increment",
    "alternate_values": True,
    "sampler_name": "euler",
    "scheduler": "normal",
    "positive_seq": "0:A portrait of a rosebud\n5:A portrait of a blooming rosebud\n"
    "10:A portrait of a blooming rose\n15:A portrait of a rose",
    "negative_seq": "",
    "use_conditioning_slerp": False,
    "use_latent_interpolation": False,
    "latent_interpolation_mode": "Blend",
    "unsample_latents": False,
    "width": None,
    "height": None,
    "keyframe_interpolation": "none",
    "color_coherence": "none",
    "color_reference": "loop0",
}


def test_defaults_are_the_nodes():
    params = SequenceParams()
    for name, (default, _, _) in NODE_NUMBERS.items():
        assert getattr(params, name) == default, name
    for name, default in NODE_DEFAULTS.items():
        assert getattr(params, name) == default, name
    assert params.positive_keyframes[0] == (0, "A portrait of a rosebud")
    assert params.negative_keyframes == [(0, "")]


def test_param_specs_describe_every_field_and_drive_the_defaults():
    fields = [f.name for f in dataclasses.fields(SequenceParams) if f.init]
    assert fields == list(PARAM_SPECS)
    assert set(NODE_NUMBERS) | set(NODE_DEFAULTS) == set(PARAM_SPECS)
    for name, spec in PARAM_SPECS.items():
        assert spec.help and "\n" not in spec.help, name
        assert getattr(SequenceParams(), name) == spec.default


# ComfyUI's own names (comfy/samplers.py: KSampler.SAMPLERS and SCHEDULER_NAMES, commit a125cd84),
# written out here: every name we accept must mean in ComfyUI what it means here.
COMFY_SAMPLERS = [
    "euler",
    "euler_cfg_pp",
    "euler_ancestral",
    "euler_ancestral_cfg_pp",
    "heun",
    "heunpp2",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m",
    "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun",
    "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
    "ddpm",
    "lcm",
    "ipndm",
    "ipndm_v",
    "deis",
    "res_multistep",
    "res_multistep_cfg_pp",
    "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp",
    "gradient_estimation",
    "gradient_estimation_cfg_pp",
    "er_sde",
    "seeds_2",
    "seeds_3",
    "sa_solver",
    "sa_solver_pece",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
]
COMFY_SCHEDULERS = [
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
]


def test_sampler_and_scheduler_names_are_comfyuis():
    assert set(SAMPLERS) <= set(COMFY_SAMPLERS)
    # every name on ComfyUI's menus, in the order of ComfyUI's menu
    assert list(SAMPLERS) == list(COMFY_SAMPLERS)
    assert len(SAMPLERS) == 42
    assert set(SCHEDULERS) == set(COMFY_SCHEDULERS)
    for name in ("sampler_name", "scheduler"):  # the node's defaults are offered
        assert PARAM_SPECS[name].default in PARAM_SPECS[name].choices


@pytest.mark.parametrize("name", list(NODE_NUMBERS))
def test_range_edges_are_accepted_and_beyond_rejected(name):
    _, low, high = NODE_NUMBERS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a short loop count leaves keyframes unreached
        assert getattr(SequenceParams(**{name: low}), name) == low
        assert getattr(SequenceParams(**{name: high}), name) == high
    delta = 1 if isinstance(low, int) else 0.001
    for bad in (low - delta, high + delta):
        with pytest.raises(ValueError) as err:
            SequenceParams(**{name: bad})
        message = str(err.value)
        assert name in message
        assert repr(bad) in message
        assert str(low) in message and str(high) in message


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("steps", True, "int"),
        ("steps", 20.0, "int"),
        ("seed", "5", "int"),
        ("cfg", "8", "float"),
        ("cfg", True, "float"),
        ("cfg", float("nan"), "0.0 to 100.0"),
        ("alternate_values", 1, "True or False"),
        ("use_conditioning_slerp", "yes", "True or False"),
        ("seed_mode_seq", "incremental", "'increment', 'decrement', 'random', 'fixed'"),
        ("sampler_name", "Euler", "'euler'"),
        ("scheduler", "linear", "'karras'"),
        ("latent_interpolation_mode", "blend", "'Blend', 'Slerp', 'Cosine Interp'"),
        ("keyframe_interpolation", "cubic", "'none', 'linear', 'ease'"),
        ("width", 500, "multiple of 8"),
        ("height", 0, "8 to 16384"),
        ("width", 16392, "8 to 16384"),
        ("width", 512.0, "int"),
        ("positive_seq", None, "index: prompt"),
    ],
)
def test_invalid_values_name_field_value_and_allowed(name, value, expected):
    with pytest.raises(ValueError) as err:
        SequenceParams(**{name: value})
    message = str(err.value)
    assert message.startswith(name)
    assert repr(value) in message
    assert expected in message


def test_numbers_are_canonicalised_not_clamped():
    params = SequenceParams(cfg=7, steps=np.int64(30), denoise_seq=np.float32(0.25), width=512)
    assert params.cfg == 7.0 and type(params.cfg) is float
    assert params.steps == 30 and type(params.steps) is int
    assert params.denoise_seq == 0.25 and type(params.denoise_seq) is float
    assert SequenceParams(alternate_values=np.bool_(False)).alternate_values is False
    assert SequenceParams(seed=2**64 - 1).seed == 2**64 - 1


def test_keyframe_errors_name_the_field_and_line():
    with pytest.raises(ValueError, match=r"positive_seq, line 2.*'a dog'"):
        SequenceParams(positive_seq="0: a cat\na dog")
    with pytest.raises(ValueError, match=r"negative_seq, line 1"):
        SequenceParams(negative_seq="2: blurry")


@pytest.mark.parametrize("text", ["", "  \n", "# nothing here"])
def test_empty_positive_is_rejected_but_empty_negative_is_the_empty_prompt(text):
    with pytest.raises(ValueError, match="positive_seq"):
        SequenceParams(positive_seq=text)
    assert SequenceParams(negative_seq=text).negative_keyframes == [(0, "")]


def test_late_keyframes_warn_with_their_index():
    with pytest.warns(UserWarning, match=r"positive_seq.*10, 15.*sequence_loop_count is 8"):
        SequenceParams(sequence_loop_count=8)
    with pytest.warns(UserWarning, match=r"negative_seq.*loop 3"):
        SequenceParams(positive_seq="0: a", negative_seq="0: b\n3: c", sequence_loop_count=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SequenceParams(sequence_loop_count=16)


def test_conditioning_slerp_and_keyframe_interpolation_exclude_each_other():
    with pytest.raises(ValueError, match="use_conditioning_slerp.*keyframe_interpolation"):
        SequenceParams(use_conditioning_slerp=True, keyframe_interpolation="linear")
    assert SequenceParams(use_conditioning_slerp=True).keyframe_interpolation == "none"


def test_from_dict_rejects_unknown_keys_and_defaults_missing_ones():
    with pytest.raises(ValueError, match="'sampler'"):
        SequenceParams.from_dict({"sampler": "euler"})
    params = SequenceParams.from_dict({"seed": 3, "cfg": 5})
    assert params == SequenceParams(seed=3, cfg=5.0)
    with pytest.raises(ValueError, match="steps"):
        SequenceParams.from_dict({"steps": 0})


def test_replace_validates_and_keeps_the_rest():
    params = SequenceParams(seed=9, positive_seq="0: a\n3: b")
    changed = params.replace(steps=4)
    assert changed.steps == 4 and changed.seed == 9
    assert changed.positive_keyframes == [(0, "a"), (3, "b")]
    with pytest.raises(ValueError, match="steps"):
        params.replace(steps=0)
    with pytest.raises(ValueError, match="'nope'"):
        params.replace(nope=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.seed = 1


prompt = st.text(alphabet="abc xyz,.()", max_size=12).map(str.strip)


@st.composite
def keyframe_texts(draw):
    indices = draw(st.sets(st.integers(1, 40), max_size=4))
    lines = [f"{i}: {draw(prompt)}" for i in [0, *sorted(indices)]]
    return "\n".join(lines)


def value_strategy(spec):
    if spec.kind == "keyframes":
        strategy = keyframe_texts()
    elif spec.kind == "choice":
        strategy = st.sampled_from(spec.choices)
    elif spec.kind == "bool":
        strategy = st.booleans()
    elif spec.kind == "float":
        strategy = st.floats(spec.min, spec.max)
    elif spec.multiple_of:
        strategy = st.integers(spec.min // spec.multiple_of, spec.max // spec.multiple_of).map(
            lambda k: k * spec.multiple_of
        )
    else:
        strategy = st.integers(spec.min, spec.max)
    return st.none() | strategy if spec.nullable else strategy


@st.composite
def param_dicts(draw):
    d = {name: draw(value_strategy(spec)) for name, spec in PARAM_SPECS.items()}
    if d["use_conditioning_slerp"]:
        d["keyframe_interpolation"] = "none"
    for name in ("denoise_start", "denoise_seq"):  # keep the schedule length within the limit
        if 0 < d[name] < d["steps"] / MAX_SCHEDULE_STEPS:
            d[name] = 0.0
    return d


@settings(max_examples=60, deadline=None)
@given(param_dicts())
def test_to_dict_from_dict_round_trip(d):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params = SequenceParams.from_dict(d)
        assert params.to_dict() == d
        again = SequenceParams.from_dict(json.loads(json.dumps(params.to_dict())))
    assert again == params
    assert again.positive_keyframes == params.positive_keyframes


def test_a_denoise_too_small_for_its_steps_is_refused_with_the_limit():
    with pytest.raises(ValueError, match=r"denoise_seq: 1e-09 with steps=20 needs a 2e\+10-step"):
        SequenceParams(denoise_seq=1e-9)
    SequenceParams(denoise_seq=0.0)  # 0 means "no change" and is fine
    SequenceParams(steps=10000, denoise_seq=0.01)  # the node's extreme: 1,000,000 steps


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"cfg": 200.0}, "cfg"),
        ({"steps": "20"}, "steps"),
        ({"sampler_name": "nope"}, "sampler_name"),
        ({"positive_seq": "0: a\nbad line"}, "positive_seq"),
        ({"negative_seq": "3: late start"}, "negative_seq"),
        ({"positive_seq": "# only a comment"}, "positive_seq"),
        ({"denoise_seq": 1e-9}, "denoise_seq"),
        (
            {"use_conditioning_slerp": True, "keyframe_interpolation": "ease"},
            "use_conditioning_slerp",
        ),
    ],
)
def test_param_error_names_its_field(changes, field):
    # The panel puts each message next to error.field: every invalid setting must carry one.
    with pytest.raises(ParamError) as caught:
        SequenceParams(**changes)
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)


def test_param_warning_names_its_field():
    with pytest.warns(ParamWarning) as caught:
        SequenceParams(positive_seq="0: a\n30: b", sequence_loop_count=5)
    assert caught[0].message.field == "positive_seq"


@pytest.mark.parametrize(
    "typo, closest",
    [("eulr", "euler"), ("unipc", "uni_pc"), ("dpmpp_2m_sde_gpux", "dpmpp_2m_sde_gpu")],
)
def test_a_misspelt_menu_name_suggests_the_closest(typo, closest):
    with pytest.raises(ParamError, match=rf"did you mean '{closest}'") as error:
        SequenceParams(sampler_name=typo)
    assert error.value.field == "sampler_name"
    assert len(str(error.value)) < 400  # the menu stays one short line
