"""The `seqwidgets render` command writes what the README promises."""

import json
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from seqwidgets.cli import build_parser, main, params_from_args


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
