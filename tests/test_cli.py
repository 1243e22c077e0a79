"""The `seqwidgets render` command writes what the README promises."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file

from seqwidgets._version import __version__
from seqwidgets.cli import _help, build_parser, main, params_from_args

ROOT = Path(__file__).resolve().parents[1]


def _subcommands() -> list[str]:
    (commands,) = [
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    ]
    return sorted(commands.choices)


# Runs the command as `seqwidgets ...` does, then reports whether torch got imported.
_RUN_CLI = """
import runpy, sys
sys.argv = ["seqwidgets", *sys.argv[1:]]
try:
    runpy.run_module("seqwidgets.cli", run_name="__main__")
except SystemExit as exit:
    code = exit.code
print("torch imported:", "torch" in sys.modules, "exit:", code, file=sys.stderr)
"""


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _RUN_CLI, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


@pytest.mark.parametrize("command", [[], *([c] for c in _subcommands())], ids=str)
def test_every_help_works_without_importing_torch(command):
    done = _run_cli(*command, "--help")
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stdout.startswith("usage: seqwidgets"), done.stdout
    assert "torch imported: False exit: 0" in done.stderr


def test_render_help_lists_every_setting_with_its_default():
    done = _run_cli("render", "--help")
    text = " ".join(done.stdout.split())
    assert "seed % 3" in text  # the literal percent sign of the alternate_values help
    for flag in ("--sequence-loop-count", "--loops", "--seed-mode-seq", "--threads", "--model"):
        assert flag in text


def test_version_is_the_package_version():
    done = _run_cli("--version")
    assert done.stdout.strip() == f"seqwidgets {__version__}"
    assert "torch imported: False exit: 0" in done.stderr


@given(st.text(alphabet=st.sampled_from("ab %()sd"), max_size=30))
def test_help_text_with_percent_signs_prints_as_written(text):
    parser = argparse.ArgumentParser(prog="p")
    parser.add_argument("--x", help=_help(text))
    assert " ".join(text.split()) in " ".join(parser.format_help().split())


def test_render_writes_pngs_gif_contact_sheet_params_and_latents(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "render",
            "--model",
            "tiny-random",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--positive",
            "0: a red circle",
            "--positive",
            "2: a blue square",
            "--loops",
            "3",
            "--steps",
            "2",
            "--seed",
            "5",
            "--quiet",
        ]
    )
    assert code == 0
    pngs = sorted(p.name for p in out.glob("loop_*.png"))
    assert pngs == ["loop_0000.png", "loop_0001.png", "loop_0002.png"]
    assert Image.open(out / "loop_0000.png").size == (64, 64)
    assert iio.imread(out / "sequence.gif", index=None).shape[0] >= 1
    assert Image.open(out / "contact_sheet.png").width > 64
    params = json.loads((out / "params.json").read_text())
    assert params["positive_seq"] == "0: a red circle\n2: a blue square"
    assert params["sequence_loop_count"] == 3 and params["seed"] == 5
    assert load_file(str(out / "latents.safetensors"))["latents"].shape == (3, 4, 8, 8)
    assert "3 loops" in capsys.readouterr().out


def test_render_refuses_to_overwrite_without_the_flag(tmp_path, capsys):
    args = [
        "render",
        "--model",
        "tiny-random",
        "--device",
        "cpu",
        "--out",
        str(tmp_path),
        "--loops",
        "1",
        "--steps",
        "1",
        "--quiet",
        "--positive",
        "0: a red circle",
    ]
    assert main(args) == 0
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0


def test_bad_settings_are_one_line_errors_not_tracebacks(tmp_path, capsys):
    code = main(["render", "--model", "tiny-random", "--out", str(tmp_path), "--cfg", "101"])
    assert code == 2
    err = capsys.readouterr().err
    assert "cfg" in err and "101" in err and "Traceback" not in err


def test_config_file_then_flags_override(tmp_path):
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"seed": 9, "steps": 7, "positive_seq": "0: a cat"}))
    args = build_parser().parse_args(["render", "--config", str(config), "--steps", "3"])
    params = params_from_args(args)
    assert (params.seed, params.steps, params.positive_seq) == (9, 3, "0: a cat")


def test_unknown_setting_in_config_is_named(tmp_path):
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"seeed": 9}))
    args = build_parser().parse_args(["render", "--config", str(config)])
    with pytest.raises(ValueError, match="seeed"):
        params_from_args(args)


def test_studio_writes_a_ready_notebook_and_names_the_server(tmp_path, capsys):
    folder = tmp_path / "studio"
    assert main(["studio", str(folder), "--model", "tiny-random", "--print-command"]) == 0
    command = capsys.readouterr().out.split()
    assert command[1:3] == ["-m", "jupyterlab"] and command[3].endswith(".ipynb")
    notebook = Path(command[3])
    code = "".join("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"])
    assert "sw.load_pipeline('tiny-random')" in code and "Studio(pipe" in code
    notebook.write_text("{}")  # an edited notebook is kept, never replaced
    assert main(["studio", str(folder), "--voila", "--print-command"]) == 0
    assert capsys.readouterr().out.split()[1:3] == ["-m", "voila"]
    assert notebook.read_text() == "{}"


def test_load_pipeline_gives_the_toy_model_its_preview_factors():
    import numpy as np

    import seqwidgets as sw
    from seqwidgets.decode import latent_to_rgb, preview_factors

    pipe = sw.load_pipeline(device="cpu")
    factors, bias = preview_factors(pipe)
    assert np.asarray(factors).shape == (4, 3) and len(bias) == 3
    assert latent_to_rgb(torch.zeros(4, 8, 8), factors, bias).shape == (8, 8, 3)


@pytest.mark.slow
def test_random_sd15_pipeline_runs_offline_with_sd15_sizes():
    import seqwidgets as sw

    pipe = sw.load_pipeline("random-sd15", device="cpu")
    assert tuple(pipe.unet.config.block_out_channels) == (320, 640, 1280, 1280)
    params = sw.SequenceParams(
        positive_seq="0: a red circle", steps=1, sequence_loop_count=1, width=64, height=64
    )
    latents = sw.SequenceSampler(pipe).sample(params)
    assert latents.shape == (1, 4, 8, 8) and torch.isfinite(latents).all()


def _never_load(*args, **kwargs):
    raise AssertionError("a model was loaded before the arguments were checked")


@pytest.mark.parametrize(
    ("make", "flag", "expected"),
    [
        (lambda tmp: ["--model", "./no_such_folder"], "--model", "no such folder"),
        (lambda tmp: ["--model", "no_such_folder"], "--model", "no such folder"),
        (lambda tmp: ["--model", str(tmp)], "--model", "no model_index.json"),
        (lambda tmp: ["--model", str(tmp / "file.txt")], "--model", "is a file"),
        (lambda tmp: ["--out", str(tmp / "file.txt")], "--out", "is not a folder"),
        (lambda tmp: ["--out", str(tmp / "file.txt" / "run")], "--out", "file.txt is a file"),
        (lambda tmp: ["--init-image", str(tmp / "nope.png")], "--init-image", "no such file"),
    ],
)
def test_bad_paths_are_one_line_errors_before_any_model_loads(
    tmp_path, monkeypatch, capsys, make, flag, expected
):
    import seqwidgets.models

    (tmp_path / "file.txt").write_text("not a model")
    monkeypatch.setattr(seqwidgets.models, "load_pipeline", _never_load)
    monkeypatch.chdir(tmp_path)
    assert main(["render", "--quiet", *make(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"seqwidgets render: error: {flag} ") and expected in err


def test_studio_refuses_a_file_as_its_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("")
    assert main(["studio", str(tmp_path / "notes.txt"), "--print-command"]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_a_hub_id_names_itself_and_is_left_to_the_loader(tmp_path, monkeypatch, capsys):
    import seqwidgets.models

    calls = []

    def fake_load(model, **kwargs):
        calls.append(model)
        raise OSError(f"{model}: not in the local Hugging Face cache and the hub could not be")

    monkeypatch.setattr(seqwidgets.models, "load_pipeline", fake_load)
    assert main(["render", "--model", "owner/model-v1.5", "--out", str(tmp_path), "--quiet"]) == 2
    assert calls == ["owner/model-v1.5"]
    assert "owner/model-v1.5: not in the local Hugging Face cache" in capsys.readouterr().err


def test_the_cli_knows_every_model_name_load_pipeline_builds():
    # cli.py cannot import seqwidgets.models (torch) to check --model: the names live in choices.
    import seqwidgets.models
    from seqwidgets.choices import BUILT_IN_MODELS

    names = {
        value
        for key, value in vars(seqwidgets.models).items()
        if key.isupper() and isinstance(value, str)
    }
    assert names == set(BUILT_IN_MODELS)


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_threads_must_be_a_positive_whole_number(value, capsys):
    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args(["render", "--threads", value])
    assert exit.value.code == 2
    assert "--threads: expected a whole number >= 1" in capsys.readouterr().err


def test_threads_flag_sets_torchs_thread_count(tmp_path, monkeypatch):
    import seqwidgets.device

    applied = []
    monkeypatch.setattr(seqwidgets.device, "apply_cpu_threads", applied.append)
    monkeypatch.setattr("seqwidgets.models.load_pipeline", _never_load)
    # The model fails to load (on purpose); the thread count was applied before it.
    with pytest.raises(AssertionError, match="a model was loaded"):
        main(["render", "--threads", "3", "--out", str(tmp_path), "--quiet"])
    assert applied == [3]


RENDER = [
    "render",
    "--model",
    "tiny-random",
    "--device",
    "cpu",
    "--loops",
    "2",
    "--steps",
    "1",
    "--quiet",
    "--positive",
    "0: a red circle",
]


@pytest.mark.parametrize(
    "name",
    [
        "loop_0000.png",
        "loop_0001.png",
        "sequence.gif",
        "contact_sheet.png",
        "params.json",
        "latents.safetensors",
    ],
)
def test_render_refuses_to_replace_any_output_before_loading_a_model(
    tmp_path, capsys, monkeypatch, name
):
    import seqwidgets.models

    (tmp_path / name).write_bytes(b"precious")

    def never(*args, **kwargs):
        raise AssertionError("a model was loaded before the outputs were checked")

    monkeypatch.setattr(seqwidgets.models, "load_pipeline", never)
    assert main([*RENDER, "--out", str(tmp_path)]) == 2
    assert name in capsys.readouterr().err
    assert (tmp_path / name).read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_render_on_a_full_disk_keeps_the_previous_outputs_whole(tmp_path, capsys, full_disk):
    out = tmp_path / "run"
    assert main([*RENDER, "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    full_disk()
    assert main([*RENDER, "--out", str(out), "--seed", "9", "--overwrite"]) == 2
    assert "No space" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no empty or partial file


def test_render_checks_fps_before_loading_a_model(tmp_path, capsys):
    assert main([*RENDER, "--out", str(tmp_path / "o"), "--fps", "0"]) == 2
    assert "fps" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_settings_warning_is_one_line_in_the_commands_voice(tmp_path, capsys):
    argv = ["render", "--model", "tiny-random", "--loops", "2", "--steps", "1", "--quiet"]
    argv += ["--positive", "0: a red circle", "--positive", "9: a blue square"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert err == (
        "seqwidgets render: warning: positive_seq: keyframe(s) at loop 9 never reached: "
        "sequence_loop_count is 2 (loops 0 to 1)\n"
    )
