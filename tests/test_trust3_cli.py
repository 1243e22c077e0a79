"""Trust, round 3 (issue 22): the CLI, export, workflow import, LoRA and resource checks say
what is wrong in one line, before any output, and never write a wrong result silently."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import seqwidgets as sw
from seqwidgets.cli import main
from seqwidgets.export import contact_sheet, save_gif, save_png_frames

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[1]


def _frames(n: int) -> list[Image.Image]:
    # Distinct frames, so Pillow merges none of them and every frame keeps its own duration.
    return [Image.new("RGB", (8, 8), (40 * i, 255 - 40 * i, 0)) for i in range(n)]


def _gif_durations(path) -> list[int]:
    with Image.open(path) as gif:
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
    return durations


# --- 1. GIF above 50 fps ------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [60.0, 100.0, 51.0])
def test_a_gif_above_50_fps_is_written_at_50_and_says_so(tmp_path, fps):
    with pytest.warns(UserWarning, match=r"fps: a GIF plays at most 50 .* written as 50 fps"):
        path = save_gif(_frames(3), tmp_path / "fast.gif", fps=fps)
    # 20 ms = 2 centiseconds: browsers play 0 or 1 cs at 10 fps, so nothing shorter is written.
    assert _gif_durations(path) == [20, 20, 20]


@settings(max_examples=25, deadline=None)
@given(fps=st.floats(min_value=0.01, max_value=50.0))
def test_a_gif_plays_at_the_nearest_rate_it_can_hold(tmp_path_factory, fps):
    path = save_gif(_frames(2), tmp_path_factory.mktemp("gif") / "a.gif", fps=fps)
    for duration in _gif_durations(path):
        assert duration >= 20
        # The nearest whole centisecond: never off by more than half of one.
        assert abs(duration - 1000 / fps) <= 5 + 1e-9


# --- 10. ComfyUI workflow import: duplicate ids -------------------------------------------------


def _ui_workflow() -> dict:
    return json.loads((DATA / "ksamplerseq_ui.json").read_text())


def test_a_duplicate_node_id_in_a_ui_workflow_is_refused_naming_it():
    workflow = _ui_workflow()
    sampler = next(n for n in workflow["nodes"] if n["type"] == "KSamplerSeq")
    twin = copy.deepcopy(sampler)
    twin["id"] = str(sampler["id"])  # 5 and "5": the same node to ComfyUI's links
    twin["widgets_values"][0] = 1  # a different seed that would shadow the first node's
    workflow["nodes"].append(twin)
    with pytest.raises(ValueError, match=rf"two nodes have the id '{sampler['id']}'"):
        sw.SequenceParams.from_comfy(workflow)


def test_a_duplicate_link_id_in_a_ui_workflow_is_refused_naming_it():
    workflow = _ui_workflow()
    first = workflow["links"][0]
    link_id = first["id"] if isinstance(first, dict) else first[0]
    workflow["links"].append(copy.deepcopy(first))
    with pytest.raises(ValueError, match=rf"two links have the id '{link_id}'"):
        sw.SequenceParams.from_comfy(workflow)


def test_a_duplicate_node_id_in_api_json_text_is_refused_naming_it(tmp_path):
    workflow = json.loads((DATA / "ksamplerseq_api.json").read_text())
    node_id = next(k for k, v in workflow.items() if v["class_type"] == "KSamplerSeq")
    twin = copy.deepcopy(workflow[node_id])
    twin["inputs"]["seed"] = 1
    # JSON text may repeat a key, and json.loads keeps the last node silently.
    text = json.dumps(workflow)[:-1] + ", " + json.dumps({node_id: twin})[1:]
    path = tmp_path / "api.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"api.json: the key '{node_id}' appears twice"):
        sw.SequenceParams.from_comfy(path)
    with pytest.raises(ValueError, match=rf"two nodes have the id '{node_id}'"):
        sw.SequenceParams.from_comfy({**workflow, int(node_id): twin})


# --- 2. Stale frames ----------------------------------------------------------------------------


def test_png_frames_with_overwrite_replace_an_earlier_longer_set(tmp_path):
    save_png_frames(_frames(5), tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "branch_0009.png").write_bytes(b"another prefix's frame")
    with pytest.warns(UserWarning, match=r"removed 2 frames \(loop_0003.png to loop_0004.png\)"):
        paths = save_png_frames(_frames(3), tmp_path, overwrite=True)
    assert [p.name for p in paths] == ["loop_0000.png", "loop_0001.png", "loop_0002.png"]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["branch_0009.png", *(p.name for p in paths), "notes.txt"]


def test_png_frames_without_overwrite_refuse_a_folder_holding_an_earlier_set(tmp_path):
    save_png_frames(_frames(1), tmp_path, prefix="loop")
    (tmp_path / "loop_0000.png").rename(tmp_path / "loop_0007.png")
    with pytest.raises(FileExistsError, match=r"1 frame \(loop_0007.png\) of an earlier export"):
        save_png_frames(_frames(2), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loop_0007.png"]


RENDER = ["render", "--model", "tiny-random", "--device", "cpu", "--steps", "1", "--quiet"]
RENDER += ["--positive", "0: a red circle"]


def test_render_overwrite_with_fewer_loops_replaces_the_set_and_says_so(tmp_path, capsys):
    assert main([*RENDER, "--loops", "4", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main([*RENDER, "--loops", "2", "--out", str(tmp_path), "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert "removed 2 frames (loop_0002.png to loop_0003.png) of an earlier render" in out
    assert sorted(p.name for p in tmp_path.glob("loop_*.png")) == ["loop_0000.png", "loop_0001.png"]


def test_render_without_overwrite_refuses_an_earlier_renders_extra_frame(tmp_path, capsys):
    (tmp_path / "loop_0005.png").write_bytes(b"an earlier render's frame")
    assert main([*RENDER, "--loops", "2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "loop_0005.png already exists; pass --overwrite" in err
    assert [p.name for p in tmp_path.iterdir()] == ["loop_0005.png"]


# --- 3. --device ----------------------------------------------------------------------------------


def _never_load(*args, **kwargs):
    raise AssertionError("a model was loaded before the arguments were checked")


def _one_error_line(capsys, start: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"seqwidgets render: error: {start}"), err
    return err


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("tpu", "--device 'tpu': not a device torch knows; available here: cpu"),
        ("cuda", "--device 'cuda': this torch cannot use CUDA"),
        ("cuda:0", "--device 'cuda:0': this torch cannot use CUDA"),
        ("mps", "--device 'mps': not available on this machine; available here: cpu"),
    ],
)
def test_a_device_this_machine_lacks_is_one_line_before_any_model_loads(
    tmp_path, monkeypatch, capsys, device, expected
):
    import torch

    import seqwidgets.models

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU-only torch
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(seqwidgets.models, "load_pipeline", _never_load)
    assert main([*RENDER, "--device", device, "--out", str(tmp_path / "o")]) == 2
    assert expected in _one_error_line(capsys, "--device")
    assert not (tmp_path / "o").exists()


# --- 4. --color-reference -----------------------------------------------------------------------


def test_a_missing_color_reference_is_refused_before_any_output(tmp_path, monkeypatch, capsys):
    import seqwidgets.models

    monkeypatch.setattr(seqwidgets.models, "load_pipeline", _never_load)
    argv = [*RENDER, "--out", str(tmp_path / "o"), "--color-coherence", "lab"]
    assert main([*argv, "--color-reference", str(tmp_path / "missing.png")]) == 2
    assert "missing.png: no such image file" in _one_error_line(capsys, "--color-reference")
    assert not (tmp_path / "o").exists()


def test_a_color_reference_without_coherence_is_said_to_have_no_effect(tmp_path, capsys):
    reference = tmp_path / "ref.png"
    Image.new("RGB", (8, 8), "red").save(reference)
    argv = [*RENDER, "--loops", "1", "--out", str(tmp_path / "o")]
    assert main([*argv, "--color-reference", str(reference)]) == 0
    err = capsys.readouterr().err
    assert err == (
        f"seqwidgets render: warning: --color-reference {reference}: has no effect while "
        "--color-coherence is 'none' (choose one of lab, hsv, rgb, latent to use it)\n"
    )


# --- 5. --config, and images over Pillow's limit -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{} {}", r"expects a JSON file of settings \(.*\): Extra data"),
        ("seed = 3", r"expects a JSON file of settings \(.*\): Expecting value"),
        ("[1, 2]", r"settings \(.*\): it holds a JSON list, not an object"),
        ("[" * 100_000 + "]" * 100_000, r"settings \(.*\): it is nested too deeply"),
        ('{"sampler": "euler"}', r"unknown setting 'sampler' \(did you mean 'sampler_name'\?\)"),
        ('{"positive_sq": "0: a"}', r"unknown setting 'positive_sq' \(did you mean 'positive_seq'"),
        ('{"zzzz": 1}', r"unknown setting 'zzzz' \(known: seed, seed_mode_seq, "),
    ],
)
def test_a_bad_config_is_one_line_saying_what_it_expects(
    tmp_path, monkeypatch, capsys, text, expected
):
    import re

    import seqwidgets.models

    monkeypatch.setattr(seqwidgets.models, "load_pipeline", _never_load)
    config = tmp_path / "settings.json"
    config.write_text(text)
    assert main([*RENDER, "--config", str(config), "--out", str(tmp_path / "o")]) == 2
    err = _one_error_line(capsys, f"--config {config}: ")
    assert re.search(expected, err), err


@pytest.mark.parametrize("side", [40, 100])  # over the limit (a warning), over twice (an error)
@pytest.mark.parametrize("flag", ["--init-image", "--color-reference"])
def test_an_image_over_pillows_limit_is_one_line(tmp_path, monkeypatch, capsys, side, flag):
    import seqwidgets.models

    monkeypatch.setattr(seqwidgets.models, "load_pipeline", _never_load)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    image = tmp_path / "big.png"
    Image.new("RGB", (side, side), "blue").save(image)
    argv = [*RENDER, "--out", str(tmp_path / "o"), flag, str(image)]
    if flag == "--color-reference":
        argv += ["--color-coherence", "rgb"]
    assert main(argv) == 2
    err = _one_error_line(capsys, f"{flag} {image}: ")
    assert "larger than Pillow's limit of 1,000 pixels" in err
    assert not (tmp_path / "o").exists()


# --- 8. Contact sheet arguments, and an output that is a folder ----------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"columns": 2.5}, r"columns: 2.5 is not allowed; allowed: a whole number from 1 to 1024"),
        ({"columns": 0}, r"columns: 0 is not allowed"),
        ({"columns": 10**9}, r"columns: 1000000000 is not allowed"),
        ({"columns": True}, r"columns: True is not allowed"),
        ({"cell": 10**6}, r"cell: 1000000 is not allowed; .* 1 to 4096, or a \(width, height\)"),
        ({"cell": (64, 0)}, r"cell: \(64, 0\) is not allowed"),
        ({"cell": (64.0, 64)}, r"cell: \(64.0, 64\) is not allowed"),
        ({"cell": "64"}, r"cell: '64' is not allowed"),
        ({"cell": (1, 2, 3)}, r"cell: \(1, 2, 3\) is not allowed"),
        ({"max_caption_lines": 10**9}, r"max_caption_lines: 1000000000 is not allowed; .* to 100"),
        ({"max_caption_lines": 1.5}, r"max_caption_lines: 1.5 is not allowed"),
    ],
)
def test_contact_sheet_refuses_absurd_layouts_naming_the_argument(options, expected):
    with pytest.raises(ValueError, match=expected):
        contact_sheet(_frames(2), ["a", "b"], **options)


def test_contact_sheet_shows_a_huge_image_in_a_smaller_cell():
    sheet = contact_sheet([Image.new("RGB", (8192, 16), "red")], columns=1)
    assert sheet.size == (4096 + 8, 8 + 8)  # 4,096 px wide, aspect kept, 4 px padding


@pytest.mark.parametrize("name", ["loop_0001.png", "sequence.gif", "params.json"])
def test_render_refuses_an_output_that_is_a_folder_before_sampling(
    tmp_path, monkeypatch, capsys, name
):
    import seqwidgets.models

    (tmp_path / name).mkdir()
    (tmp_path / name / "keep.txt").write_text("mine")
    monkeypatch.setattr(seqwidgets.models, "load_pipeline", _never_load)
    assert main([*RENDER, "--loops", "2", "--out", str(tmp_path), "--overwrite"]) == 2
    err = _one_error_line(capsys, f"--out {tmp_path}: {name} is a folder")
    assert "choose another --out" in err
    assert [p.name for p in tmp_path.iterdir()] == [name]


# --- 6. seqwidgets studio -------------------------------------------------------------------------


def _fake_jupyterlab(folder: Path, status: int) -> Path:
    """A `jupyterlab` package whose server refuses to start, as JupyterLab does as root."""
    package = folder / "fake" / "jupyterlab"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(
        "import sys\n"
        "print('Running as root is not recommended. Use --allow-root to bypass.', file=sys.stderr)\n"
        f"sys.exit({status})\n"
    )
    return package.parent


@pytest.mark.parametrize("status", [1, 3])
def test_studio_passes_jupyterlabs_exit_status_through(tmp_path, status):
    fake = _fake_jupyterlab(tmp_path, status)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "seqwidgets.cli",
            "studio",
            str(tmp_path / "s"),
            "--model",
            "tiny-random",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(ROOT)])},
        timeout=120,
    )
    assert done.returncode == status
    assert "Use --allow-root" in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.endswith(
        f"seqwidgets studio: error: JupyterLab exited with status {status}\n"
    )


def test_studio_checks_the_model_before_writing_the_notebook(tmp_path, capsys):
    assert (
        main(["studio", str(tmp_path / "s"), "--model", "./no_such_model", "--print-command"]) == 2
    )
    assert "--model ./no_such_model: no such folder" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_studio_writes_a_local_models_path_the_notebook_can_find(tmp_path, monkeypatch, capsys):
    model = tmp_path / "models" / "mine"
    model.mkdir(parents=True)
    (model / "model_index.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert main(["studio", "s", "--model", "models/mine", "--print-command"]) == 0
    notebook = Path(capsys.readouterr().out.split()[3])
    code = "".join("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"])
    # The kernel starts in s/, where "models/mine" does not exist.
    assert f"sw.load_pipeline({str(model)!r})" in code


# --- 9. Resources: a run or a sheet too large for the memory there is refused up front ------------


@pytest.fixture
def free_memory(monkeypatch):
    """Pretend the machine has ``bytes`` free, whatever it really has."""
    import seqwidgets.device

    def set_free(size: int) -> None:
        monkeypatch.setattr(seqwidgets.device, "available_memory", lambda device="cpu": size)

    return set_free


@pytest.fixture(scope="module")
def toy():
    return sw.load_pipeline(device="cpu")


def _no_sampling(pipe):
    def refuse(*args, **kwargs):
        raise AssertionError("sampling started before the memory check")

    pipe.unet.forward = refuse
    return pipe


@pytest.fixture
def load_without_sampling(monkeypatch):
    """`load_pipeline` as the CLI calls it, but a model call fails the test: a check that
    came too late shows as that failure, not as minutes of sampling."""
    import seqwidgets.models

    load = seqwidgets.models.load_pipeline
    monkeypatch.setattr(
        seqwidgets.models, "load_pipeline", lambda *a, **k: _no_sampling(load(*a, **k))
    )


def test_a_run_too_large_for_memory_is_refused_before_the_first_step(free_memory):
    free_memory(16 * 10**9)
    sampler = sw.SequenceSampler(_no_sampling(sw.load_pipeline(device="cpu")))
    params = sw.SequenceParams(
        positive_seq="0: a red circle", steps=1, sequence_loop_count=1, width=16384, height=16384
    )
    with pytest.raises(ValueError) as error:
        next(sampler.frames(params))
    message = str(error.value)
    assert re.fullmatch(
        r"width, height: 16384x16384 needs about \d+\.\d GB of CPU memory \(the VAE decode "
        r"\d+\.\d GB, the denoiser \d+\.\d GB\) and 16\.0 GB is free; lower width and height "
        r"\(about (\d+)x\1 fits\), or decode in tiles: pipe.vae.enable_tiling\(\)",
        message,
    ), message
    assert sampler.unet_calls == 0


def test_the_size_said_to_fit_does_fit(free_memory):
    from seqwidgets.device import check_run_memory

    pipe = sw.load_pipeline(device="cpu")
    free_memory(16 * 10**9)
    with pytest.raises(ValueError, match=r"about (\d+)x(\d+) fits") as error:
        check_run_memory(pipe, 16384, 8192)
    width, height = map(int, re.search(r"about (\d+)x(\d+) fits", str(error.value)).groups())
    assert width > height and width % 64 == 0
    check_run_memory(pipe, width, height)  # no error


@settings(max_examples=20, deadline=None)
@given(side=st.integers(1, 64).map(lambda n: 64 * n), factor=st.sampled_from([2, 3]))
def test_the_estimate_grows_with_the_pixels_and_tiling_bounds_the_decode(toy, side, factor):
    from seqwidgets.device import run_memory

    pipe = toy
    small, large = run_memory(pipe, side, side), run_memory(pipe, side * factor, side * factor)
    fixed = sw.device.FIXED_OVERHEAD
    assert large["decode"] - fixed == factor**2 * (small["decode"] - fixed)
    assert large["peak"] > small["peak"]
    tripled = run_memory(pipe, side, side, batch=3)["denoiser"] - fixed
    assert tripled == 3 * (small["denoiser"] - fixed)
    pipe.vae.enable_tiling()
    try:
        tiled = run_memory(pipe, 16384, 16384)
    finally:
        pipe.vae.disable_tiling()
    assert tiled["decode"] < run_memory(pipe, 16384, 16384)["decode"] / 10


def test_render_refuses_a_size_too_large_for_memory_before_writing(
    tmp_path, capsys, free_memory, load_without_sampling
):
    free_memory(10**9)
    out = tmp_path / "o"
    argv = [*RENDER, "--width", "16384", "--height", "16384", "--out", str(out)]
    assert main(argv) == 2
    err = _one_error_line(capsys, "width, height: 16384x16384 needs about ")
    assert "and 1.0 GB is free; lower width and height" in err
    assert not out.exists()


def test_a_contact_sheet_too_large_for_memory_is_refused(free_memory):
    free_memory(10**6)
    with pytest.raises(
        ValueError,
        match=r"contact sheet: 1036x\d+ pixels need about 0\.0 GB .*; lower cell or columns",
    ):
        contact_sheet(_frames(2), columns=2, cell=512)


def test_a_contact_sheet_over_pillows_limit_says_pillow_will_refuse_it(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.warns(UserWarning, match=r"over twice Pillow's decompression-bomb limit"):
        contact_sheet(_frames(2), columns=2)


def test_render_refuses_a_contact_sheet_too_large_for_memory_before_sampling(
    tmp_path, monkeypatch, capsys, free_memory, load_without_sampling
):
    import seqwidgets.device

    free_memory(10**9)
    # The run itself fits; only the sheet of 1,024 loops does not.
    monkeypatch.setattr(seqwidgets.device, "check_run_memory", lambda *a, **k: None)
    out = tmp_path / "o"
    argv = [*RENDER, "--loops", "1024", "--width", "1024", "--height", "1024", "--out", str(out)]
    assert main(argv) == 2
    err = _one_error_line(capsys, "contact sheet: ")
    assert err.endswith("is free; lower width and height, or --loops\n")
    assert not out.exists()


@pytest.mark.slow
def test_the_memory_benchmark_measures_below_the_estimate(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))  # as tests/test_benchmarks.py does
    import bench_memory

    result = bench_memory.main(
        ["--model", "tiny-random", "--sizes", "64", "128", "--json", str(tmp_path / "m.json")]
    )
    assert [(row["size"], row["part"]) for row in result["rows"]] == [
        (64, "denoiser"),
        (64, "decode"),
        (128, "denoiser"),
        (128, "decode"),
    ]
    for row in result["rows"]:
        assert row["measured_bytes"] <= row["estimate_bytes"], row  # an upper bound
    assert json.loads((tmp_path / "m.json").read_text())["rows"] == result["rows"]
