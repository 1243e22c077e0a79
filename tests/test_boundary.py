"""At the API boundary, bad input is a ValueError naming the field or file; nothing else escapes.

(`FileNotFoundError` is the one other answer, for a path that does not exist.)
"""

import copy
import json
import math
import time
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFont

import seqwidgets as sw
from seqwidgets import export, session_io
from seqwidgets.errors import ParamError
from seqwidgets.params import PARAM_SPECS

DATA = Path(__file__).parent / "data"
ALLOWED = (ValueError, FileNotFoundError)

# Values a JSON file or a careless caller can hold: huge integers, non-finite floats, None,
# text with lone surrogates, wrong containers.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from([10**400, -(10**400), 2**64, 2**63 - 1, 64.5, 1e308, 1e-9, -0.0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["\ud800", "a red \udc80 circle", "0: a \ud83d cat", "64", "euler", ""]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def deep(depth: int):
    value = []
    for _ in range(depth):
        value = [value]
    return value


def paths(value, prefix=()):
    """Every (key or index) path into a JSON document."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from paths(item, (*prefix, i))


def replaced(document, path, value):
    document = copy.deepcopy(document)
    if not path:
        return value
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return document


def only_value_errors(call, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return call(*args, **kwargs)
        except ALLOWED as error:
            return error


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cfg", 10**400),
        ("denoise_seq", 10**400),
        ("denoise_start", -(10**400)),
        ("width", None),  # allowed: the pipeline's size
        ("width", math.inf),
        ("width", 64.5),
        ("width", "64"),
        ("height", 2**64),
        ("seed", 10**400),
        ("cfg", "8"),
        ("positive_seq", "0: a red \udc80 circle"),
        ("negative_seq", "0: \ud800"),
        ("positive_seq", "0: a\n" + "1" * 5000 + ": b"),
        ("latent_interpolation_mode", ["Blend"]),
        ("sampler_name", {"name": "euler"}),
        ("cfg", deep(5000)),
    ],
)
def test_bad_settings_are_param_errors_naming_the_field(field, value):
    if field == "width" and value is None:
        assert sw.SequenceParams(width=None).width is None
        return
    with pytest.raises(ParamError) as caught:
        sw.SequenceParams.from_dict({field: value})
    assert caught.value.field == field and str(caught.value).startswith(field)
    assert len(str(caught.value)) < 400  # a huge value is shown shortened


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(PARAM_SPECS)), json_values, max_size=5))
def test_from_dict_raises_only_value_errors_naming_a_field(values):
    result = only_value_errors(sw.SequenceParams.from_dict, values)
    if isinstance(result, Exception):
        assert isinstance(result, ParamError) and result.field in values, repr(result)


# -- ComfyUI workflows -------------------------------------------------------------------------


def api_workflow():
    return sw.SequenceParams(width=512, height=768, sequence_loop_count=16).to_comfy("workflow")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda w: w["5"]["inputs"].update(cfg=10**400), "cfg"),
        (lambda w: w["5"]["inputs"].update(denoise_seq=10**400), "denoise_seq"),
        (lambda w: w["4"]["inputs"].update(width=None), "width"),
        (lambda w: w["4"]["inputs"].update(width=math.inf), "width"),
        (lambda w: w["4"]["inputs"].update(width=64.5), "width"),
        (lambda w: w["4"]["inputs"].update(height="64"), "height"),
        (lambda w: w["5"].update(inputs=7), "inputs"),
        (lambda w: w["2"]["inputs"].update(text="0: a \udc80"), "positive_seq"),
    ],
)
def test_bad_workflow_values_are_value_errors_naming_the_field(edit, match):
    workflow = api_workflow()
    edit(workflow)
    with pytest.raises(ValueError, match=match):
        sw.SequenceParams.from_comfy(workflow)


def test_a_ui_node_whose_inputs_are_not_a_list_is_a_value_error():
    workflow = json.loads((DATA / "ksamplerseq_ui.json").read_text())
    workflow["nodes"][0]["inputs"] = 5
    with pytest.raises(ValueError, match="inputs"):
        sw.SequenceParams.from_comfy(workflow)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"a":' * 100_000 + "1" + "}" * 100_000, "nested too deeply"),
        ("[1]", "JSON object, got list"),
        ("x" * 10_000, "neither JSON text"),
        ("workflow\0.json", "neither JSON text"),
        ("{not json", "not JSON"),
    ],
)
def test_workflow_text_that_is_not_a_workflow_is_a_value_error(text, match):
    with pytest.raises(ValueError, match=match):
        sw.SequenceParams.from_comfy(text)


def test_a_missing_workflow_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such workflow file"):
        sw.SequenceParams.from_comfy(tmp_path / "missing.json")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="UTF-8"):
        sw.SequenceParams.from_comfy(tmp_path / "binary.json")


@pytest.fixture(scope="module")
def workflows():
    ui = json.loads((DATA / "ksamplerseq_ui.json").read_text())
    return [ui, json.loads((DATA / "ksamplerseq_api.json").read_text()), api_workflow()]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_from_comfy_raises_only_value_errors(workflows, data):
    workflow = data.draw(st.sampled_from(workflows))
    path = data.draw(st.sampled_from(list(paths(workflow))))
    edited = replaced(workflow, path, data.draw(json_values))
    only_value_errors(sw.SequenceParams.from_comfy, edited)
    # The same through JSON text (as from a file or a clipboard), where that text exists.
    try:
        text = json.dumps(edited)
    except (ValueError, RecursionError):
        return
    only_value_errors(sw.SequenceParams.from_comfy, text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_text_given_as_a_workflow_is_a_value_error_or_not_found(text):
    only_value_errors(sw.SequenceParams.from_comfy, text)


# -- saved sessions ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_session(tiny_pipe):
    session = sw.Session(tiny_pipe)
    root = session.run(sw.SequenceParams(steps=1, sequence_loop_count=2, positive_seq="0: a"))
    session.branch((root, 0), seed=3, name="seed 3")
    return session


@pytest.fixture(scope="module")
def saved_folder(small_session, tmp_path_factory):
    folder = small_session.save(tmp_path_factory.mktemp("sessions") / "s")
    from safetensors.torch import load_file

    return json.loads((folder / "manifest.json").read_text()), load_file(
        folder / "latents.safetensors"
    )


def write_session(folder: Path, manifest, tensors) -> Path:
    """A session folder holding ``manifest`` (checksum recomputed) and ``tensors``."""
    from safetensors.torch import save_file

    folder.mkdir(exist_ok=True)
    sealed = json.loads(session_io.seal(manifest, tensors))
    (folder / "manifest.json").write_text(json.dumps(sealed))  # ASCII: surrogates escaped
    save_file(tensors, folder / "latents.safetensors")
    return folder


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_load_of_any_edited_manifest_raises_only_value_errors(
    saved_folder, tiny_pipe, tmp_path, data
):
    manifest, tensors = saved_folder
    manifest = {k: v for k, v in manifest.items() if k != "checksum"}
    path = data.draw(st.sampled_from(list(paths(manifest))[1:]))  # the manifest stays an object
    edited = replaced(manifest, path, data.draw(json_values))
    try:
        folder = write_session(tmp_path / "edited", edited, tensors)
    except (ValueError, RecursionError):
        return  # not expressible as JSON text (NaN keys and the like)
    result = only_value_errors(sw.Session.load, folder, tiny_pipe)
    if isinstance(result, Exception):
        assert str(folder) in str(result), str(result)


def load_edited(saved_folder, tmp_path, tiny_pipe, edit=None, tensors_edit=None):
    manifest, tensors = copy.deepcopy(saved_folder[0]), dict(saved_folder[1])
    if edit is not None:
        edit(manifest)
    if tensors_edit is not None:
        tensors_edit(tensors)
    folder = write_session(tmp_path / "edited", manifest, tensors)
    return sw.Session.load(folder, tiny_pipe)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m.update(version=True), "version True"),
        (lambda m: m.update(version=1.0), "version 1.0"),
        (lambda m: m["branches"][1].update(parent=True), "parent True"),
        (lambda m: m["branches"][1].update(parent=1.0), "parent 1.0"),
        (lambda m: m["branches"][0]["frames"][0].update(denoise=10**400), "denoise"),
        (lambda m: m["branches"][0]["frames"][0].update(seed=10**400), "seed"),
        (lambda m: m["branches"][0]["params"].update(cfg=10**400), r"params: cfg"),
        (lambda m: m["branches"][0]["params"].update(width=128), "latent shape"),
        (lambda m: m["branches"][0].update(name="bad \udc80"), r"branches\[0\]\.name"),
        (lambda m: m["branches"].append(deep(900)), "branches"),
        (lambda m: m["pipeline"].update(latent_channels=16), "16 channels"),
        (lambda m: m.update(next_id="7"), "next_id"),
    ],
)
def test_load_checks_what_it_promises(saved_folder, tmp_path, tiny_pipe, edit, match):
    with pytest.raises(ValueError, match=match):
        load_edited(saved_folder, tmp_path, tiny_pipe, edit)


def test_a_path_that_cannot_be_one_is_a_value_error(tiny_pipe):
    with pytest.raises(ValueError, match="not a usable session path"):
        sw.Session.load("x" * 10_000, tiny_pipe)
    with pytest.raises(FileNotFoundError):  # a NUL: no file can have that name
        sw.Session.load("session\0.safetensors", tiny_pipe)


def test_a_nan_latent_never_loads(saved_folder, tmp_path, tiny_pipe):
    def poison(tensors):
        latent = tensors["latent/1/1"].clone()
        latent[0, 0, 0] = math.nan
        tensors["latent/1/1"] = latent

    with pytest.raises(ValueError, match="'latent/1/1' holds NaN"):
        load_edited(saved_folder, tmp_path, tiny_pipe, tensors_edit=poison)


def test_a_deeply_nested_manifest_is_a_value_error(saved_folder, tmp_path, tiny_pipe):
    folder = write_session(tmp_path / "s", *saved_folder)
    (folder / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        sw.Session.load(folder, tiny_pipe)


def test_another_model_warns_and_other_channels_are_refused(small_session, tmp_path, tiny_pipe):
    path = small_session.save(tmp_path / "s.safetensors")
    other = sw.testing.tiny_pipeline("sd", seed=1)  # same architecture, other weights
    with pytest.warns(UserWarning, match="weights fingerprint"):
        loaded = sw.Session.load(path, other)
    assert len(loaded.branches) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same model: no warning
        sw.Session.load(path, tiny_pipe)
    manifest = session_io.read_manifest(path)
    assert manifest["pipeline"]["class"] == type(tiny_pipe).__name__
    assert manifest["pipeline"]["latent_channels"] == 4


def test_names_and_prompts_with_lone_surrogates_are_refused_naming_them(small_session, tmp_path):
    session = small_session
    root = session.branches[0]
    with pytest.raises(ValueError, match="name"):
        session.branch((root, 0), name="seed \udc80")
    with pytest.raises(ParamError, match="positive_seq"):
        session.branch((root, 0), positive_seq="0: \udc80")
    old = root.name
    root.name = "renamed \udc80"  # a name assigned directly reaches save
    try:
        with pytest.raises(ValueError, match=f"branch {root.id} name"):
            session.save(tmp_path / "s.safetensors")
    finally:
        root.name = old
    assert list(tmp_path.iterdir()) == []


# -- exports -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [1e-9, 0, -1, math.inf, math.nan, 10**400, "4", None, True])
def test_export_fps_out_of_range_is_a_value_error(small_session, tmp_path, fps):
    root = small_session.branches[0]
    for format in ("gif", "mp4"):
        with pytest.raises(ValueError, match="fps"):
            small_session.export(root, tmp_path / f"a.{format}", format=format, fps=fps)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("upto", [-1, 2, 10**400, 1.0, "1", True])
def test_export_upto_out_of_range_is_a_value_error(small_session, tmp_path, upto):
    root = small_session.branches[0]
    with pytest.raises(ValueError, match="upto"):
        small_session.export(root, tmp_path / "a.gif", upto=upto)
    assert list(tmp_path.iterdir()) == []


def test_gif_frame_duration_is_never_zero(tmp_path):
    images = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    low, high = export.FPS_RANGE
    # 100 fps is written as 50 (2 cs): browsers play 1 cs as 10 fps.
    for fps, expected in ((high, 20), (low, 100_000)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = export.save_gif(images, tmp_path / f"{fps}.gif", fps=fps)
        with Image.open(path) as gif:
            assert gif.info["duration"] == expected


@pytest.mark.parametrize(
    "caption",
    ["https://example.com/" + "a" * 10_000, "猫" * 10_000, "word " * 20_000, "x" * 1_000_000],
)
def test_caption_fitting_is_fast_and_always_ends(caption):
    font = ImageFont.load_default()
    start = time.perf_counter()
    lines = export._wrap(font, caption, 120, 3)
    sheet = export.contact_sheet([Image.new("RGB", (32, 32))], [caption])
    assert time.perf_counter() - start < 1.0
    assert 1 <= len(lines) <= 3 and lines[-1].endswith("...")
    assert all(font.getlength(line) <= 120 for line in lines)
    assert sheet.width > 32
