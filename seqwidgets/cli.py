"""The ``seqwidgets`` command: render a sequence headless.

``seqwidgets render`` runs KSampler Sequence with settings from flags and/or a JSON file and writes
every loop as a PNG, an animated GIF, a contact sheet, the settings and the stacked latents.

Example:
    $ seqwidgets render --positive-seq "0: a red circle" --positive-seq "6: a blue square" \\
          --sequence-loop-count 12 --out out/circle-to-square

Starting it imports no torch, diffusers or widgets: ``--help``, ``--version`` and the checks of
``--model`` / ``--out`` answer at once; the heavy imports happen when a model loads.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import warnings
from pathlib import Path

from ._io import read_image
from ._version import __version__
from .choices import BUILT_IN_MODELS, HUB_ID, SAMPLERS, samplers_help
from .params import PARAM_SPECS, ParamSpec, SequenceParams
from .presets import PRESETS, get_preset

# Short aliases a ComfyUI user would type, beside the node's full input names.
ALIASES = {
    "seed_mode_seq": "--seed-mode",
    "sampler_name": "--sampler",
    "sequence_loop_count": "--loops",
    "positive_seq": "--positive",
    "negative_seq": "--negative",
}


# Model names load_pipeline() builds itself (seqwidgets.models), not folders or hub ids.

# A Hugging Face hub id: "owner/name" of letters, digits, "-", "_" and ".", not starting with ".".


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _help(text: str) -> str:
    # argparse %-formats help strings (for %(default)s): a literal "%" must be doubled.
    return text.replace("%", "%%")


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _add_param_flag(group, spec: ParamSpec) -> None:
    names = [_flag(spec.name)] + ([ALIASES[spec.name]] if spec.name in ALIASES else [])
    default = "the pipeline's size" if spec.default is None else repr(spec.default)
    allowed = spec.allowed()
    if spec.name == "sampler_name":
        # 42 quoted names are a wall: the names by menu group, one group after another.
        allowed = f"the {len(SAMPLERS)} of ComfyUI's menu, by group: " + "; ".join(
            samplers_help().splitlines()
        )
    help_text = _help(f"{spec.help} Allowed: {allowed}. Default: {default}.")
    if spec.kind == "keyframes":
        # Repeatable: each occurrence is one "index: prompt" line.
        group.add_argument(*names, dest=spec.name, action="append", help=help_text)
        return
    kind = {"int": int, "float": float, "bool": _parse_bool}.get(spec.kind, str)
    group.add_argument(*names, dest=spec.name, type=kind, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqwidgets", description="Sequential diffusion sampling (KSampler Sequence)."
    )
    parser.add_argument("--version", action="version", version=f"seqwidgets {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser(
        "render",
        help="run a sequence headless and write PNGs, a GIF and a contact sheet",
        description=(
            "Run KSampler Sequence and write loop_NNNN.png, sequence.gif, contact_sheet.png, "
            "params.json and latents.safetensors. Flags override --preset, which overrides "
            "--config."
        ),
    )
    render.add_argument(
        "--model",
        default=None,
        help="a hub id (owner/name), a local diffusers folder (SD 1.x/2.x, SDXL, SD3/SD3.5, Flux) "
        "or one of the random pipelines built offline: "
        + ", ".join(BUILT_IN_MODELS)
        + " (default: the toy model shipped with seqwidgets)",
    )
    render.add_argument("--config", type=Path, help="a JSON file of settings (SequenceParams)")
    render.add_argument(
        "--preset",
        metavar="NAME",
        default=None,
        help=_help(
            "steps, cfg, sampler and scheduler for a few-step model, over --config; the "
            "flags given override it. One of: "
            + "; ".join(f"{p.name} ({p.describe()})" for p in PRESETS.values())
        ),
    )
    render.add_argument("--out", type=Path, default=Path("out"), help="output folder (default out)")
    render.add_argument("--init-image", type=Path, help="an image to start loop 0 from")
    render.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best one)")
    render.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="CPU threads for torch on the CPU (default: $SEQWIDGETS_CPU_THREADS, else "
        "seqwidgets.device's choice for this machine)",
    )
    render.add_argument(
        "--fps",
        type=float,
        default=4.0,
        help="GIF frames per second (0.01 to 100; a GIF plays at most 50, so faster is written as 50, with a warning)",
    )
    _add_big_model_flags(render)
    render.add_argument("--overwrite", action="store_true", help="replace existing output files")
    render.add_argument("--quiet", action="store_true", help="no progress bar")
    group = render.add_argument_group("settings (the node's inputs)")
    for spec in PARAM_SPECS.values():
        _add_param_flag(group, spec)

    studio = commands.add_parser(
        "studio",
        help="open the studio in JupyterLab (or Voila) on a ready notebook",
        description=(
            "Write seqwidgets-studio.ipynb into FOLDER (an existing one is kept as it is) and "
            "open it in JupyterLab, or in Voila with --voila."
        ),
    )
    studio.add_argument("folder", nargs="?", type=Path, default=Path("."))
    studio.add_argument("--model", default=None, help="as for render (default: the toy model)")
    _add_big_model_flags(studio)
    studio.add_argument("--voila", action="store_true", help="open with Voila instead")
    studio.add_argument("--port", type=int, default=None)
    studio.add_argument(
        "--print-command", action="store_true", help="write the notebook, print the command"
    )
    return parser


def _add_big_model_flags(command: argparse.ArgumentParser) -> None:
    """``load_pipeline``'s options for pipelines larger than the accelerator's memory."""
    group = command.add_argument_group(
        'big models (see docs/big_models.md; need pip install "seqwidgets[quant]")'
    )
    group.add_argument(
        "--offload",
        choices=("model", "sequential"),
        default=None,
        help="diffusers' CPU offload: 'model' moves each whole model to the GPU when it runs, "
        "'sequential' one layer at a time (least memory, much slower); needs a GPU",
    )
    group.add_argument(
        "--quantize",
        choices=("4bit", "8bit"),
        default=None,
        help="quantize the transformer (or UNet) and the large text encoders as they load: "
        "bitsandbytes on CUDA; on the CPU only 8bit (torchao int8 weight-only)",
    )
    group.add_argument(
        "--transformer-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="a single-file transformer (.gguf, e.g. city96's, or .safetensors) used instead "
        "of the pipeline's own; the rest loads from --model (the same model's hub id or folder)",
    )
    group.add_argument(
        "--free-text-encoders",
        action="store_true",
        help="keep the text encoders on the CPU except while new prompts are encoded",
    )


def _load_options(args: argparse.Namespace) -> dict:
    """The big-model options given, as `load_pipeline` takes them."""
    options = {
        "offload": args.offload,
        "quantize": args.quantize,
        "transformer_file": args.transformer_file,
        "free_text_encoders": args.free_text_encoders,
    }
    return {key: value for key, value in options.items() if value not in (None, False)}


def _check_load_options(args: argparse.Namespace, device) -> None:
    """The big-model flags checked before a model loads (they need torch to see the devices)."""
    options = _load_options(args)
    if not options:
        return
    import torch

    from .device import default_device
    from .models import check_load_options

    device = torch.device(device) if device is not None else default_device()
    check_load_options(args.model, device, **options, flags=True)


def params_from_args(args: argparse.Namespace) -> SequenceParams:
    """Settings from ``--config`` (if any), then ``--preset``, then every flag given."""
    values = {} if args.config is None else read_config(args.config)
    if getattr(args, "preset", None) is not None:
        values.update(get_preset(args.preset).settings())
    for name, spec in PARAM_SPECS.items():
        value = getattr(args, name)
        if value is None:
            continue
        values[name] = "\n".join(value) if spec.kind == "keyframes" else value
    return SequenceParams.from_dict(values)


def read_config(path: Path) -> dict:
    """The settings in a ``--config`` file, or a `ValueError` in one line: what the file should
    be, what is wrong with it, and for a misspelled setting the closest name.

    Example:
        >>> import tempfile
        >>> config = Path(tempfile.mkdtemp()) / "settings.json"
        >>> _ = config.write_text('{"seed": 7, "step": 20}')
        >>> read_config(config)
        Traceback (most recent call last):
        ...
        ValueError: --config ...settings.json: unknown setting 'step' (did you mean 'steps'?)
    """
    expects = f"--config {path}: expects a JSON file of settings ({_CONFIG_EXAMPLE})"
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{expects}: it is not UTF-8 text") from None
    except OSError as error:
        raise ValueError(f"--config {path}: cannot read it ({error.strerror})") from None
    try:
        values = json.loads(text)
    except RecursionError:
        raise ValueError(f"{expects}: it is nested too deeply to be settings") from None
    except ValueError as error:  # JSONDecodeError, or an integer of too many digits
        raise ValueError(f"{expects}: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{expects}: it holds a JSON {type(values).__name__}, not an object")
    for key in values:
        if key not in PARAM_SPECS:
            close = difflib.get_close_matches(key, PARAM_SPECS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(PARAM_SPECS)}"
            raise ValueError(f"--config {path}: unknown setting {key!r} ({hint})")
    return values


_CONFIG_EXAMPLE = '{"seed": 1, "steps": 20, "positive_seq": "0: a red circle"}'


def render(args: argparse.Namespace) -> int:
    import torch
    from safetensors.torch import save as safetensors_bytes
    from tqdm.auto import tqdm

    from . import _io
    from .decode import decode_latents
    from .device import check_device, check_run_memory
    from .engine import SequenceSampler
    from .export import (
        check_contact_sheet,
        check_fps,
        describe_frames,
        remove_stale_frames,
        save_contact_sheet,
        save_gif,
    )
    from .models import load_pipeline

    # 1. Every input and output is checked before a model loads and before anything is written:
    #    a run of minutes never ends in a refusal, and nothing is replaced without --overwrite.
    params = params_from_args(args)
    check_fps(args.fps)
    device = None if args.device is None else check_device(args.device, "--device")
    out = args.out
    outputs = _render_outputs(out, params.sequence_loop_count)
    _check_outputs(outputs, out, args.overwrite)
    init_image = None if args.init_image is None else read_image(args.init_image, "--init-image")
    _check_color_reference(params)
    _check_load_options(args, device)

    # 2. Load the model and sample, writing each loop's PNG as soon as it is done.
    pipe = load_pipeline(args.model, device=device, **_load_options(args))
    sampler = SequenceSampler(pipe)
    # Memory for the run and for the contact sheet at its end, before the out folder is made.
    check_run_memory(pipe, *sampler.image_size(params))
    loops = "width and height, or --loops"
    check_contact_sheet(params.sequence_loop_count, sampler.image_size(params), lower=loops)
    plans = sampler.plan(params)
    total = sum(plan.steps for plan in plans)
    bar = tqdm(total=total, unit="step", disable=args.quiet, desc="sampling")

    def on_step(loop: int, step: int, sigma: float, denoised) -> None:
        bar.set_postfix_str(f"loop {loop + 1}/{len(plans)}")
        bar.update(1)

    out.mkdir(parents=True, exist_ok=True)
    _io.remove_orphans(out)  # what a killed render left
    frames, images = [], []
    try:
        for frame in sampler.frames(params, init_image=init_image, callback=on_step):
            image = decode_latents(pipe.vae, frame.latent)[0]
            _io.write_file(
                outputs[frame.index],
                lambda tmp, image=image: image.save(tmp, format="PNG"),
                overwrite=args.overwrite,
            )
            frames.append(frame)
            images.append(image)
    finally:
        bar.close()
    # The settings and latents first: what cannot be made again without sampling.
    settings = json.dumps(params.to_dict(), indent=2, ensure_ascii=False).encode("utf-8")
    _io.write_bytes(outputs["params"], settings, overwrite=args.overwrite)
    latents = torch.stack([f.latent for f in frames]).float().contiguous()
    data = safetensors_bytes({"latents": latents})
    _io.write_bytes(outputs["latents"], data, overwrite=args.overwrite)
    captions = [f"loop {f.index} · seed {f.seed}\n{f.prompt}" for f in frames]
    save_gif(images, outputs["gif"], fps=args.fps, overwrite=args.overwrite)
    save_contact_sheet(images, outputs["sheet"], captions=captions, overwrite=args.overwrite)
    # The new frames replace an earlier render's set: its frames beyond this run's loops go.
    removed = remove_stale_frames(out, [outputs[f.index] for f in frames])
    if removed:
        print(f"removed {describe_frames(removed)} of an earlier render from {out}/")
    seconds = sum(f.timings["total"] for f in frames)
    print(
        f"{len(frames)} loops in {seconds:.1f} s -> {out}/ (loop_*.png, sequence.gif, "
        "contact_sheet.png, params.json, latents.safetensors)"
    )
    return 0


def _render_outputs(out: Path, loops: int) -> dict:
    """Every file `render` writes in ``out``: loop index -> its PNG, and the named outputs."""
    outputs: dict = {i: out / f"loop_{i:04d}.png" for i in range(loops)}
    outputs.update(
        gif=out / "sequence.gif",
        sheet=out / "contact_sheet.png",
        params=out / "params.json",
        latents=out / "latents.safetensors",
    )
    return outputs


def _check_color_reference(params: SequenceParams) -> None:
    """An image file as ``color_reference`` must be readable now, not after loop 0 was written;
    with ``color_coherence`` "none" any reference is unused, which is said, not refused (a
    config file may keep a reference while coherence is switched off)."""
    from .choices import COLOR_COHERENCE_MODES, COLOR_REFERENCES

    reference = params.color_reference
    if params.color_coherence == "none":
        if reference != PARAM_SPECS["color_reference"].default:
            warnings.warn(
                f"--color-reference {reference}: has no effect while --color-coherence is "
                f"'none' (choose one of {', '.join(COLOR_COHERENCE_MODES[1:])} to use it)",
                stacklevel=2,
            )
        return
    if reference in COLOR_REFERENCES:
        return
    if not Path(reference).is_file():
        raise ValueError(f"--color-reference {reference}: no such image file")
    read_image(Path(reference), "--color-reference")


def _check_outputs(outputs: dict, out: Path, overwrite: bool) -> None:
    """Refuse, before a model loads, outputs that cannot be written, so a run of minutes never
    ends in a refusal: one that is a folder, and (without ``--overwrite``) one that exists or
    an earlier render's frame (``loop_NNNN.png``, which the new frames replace as a set)."""
    from .export import frame_files

    for path in outputs.values():
        if path.is_dir():
            raise ValueError(
                f"--out {out}: {path.name} is a folder, where this render writes a file; "
                "move it away or choose another --out"
            )
    stale = sorted(set(frame_files(out)) - set(outputs.values()))
    existing = [path for path in outputs.values() if path.exists() or path.is_symlink()]
    existing += stale
    if existing and not overwrite:
        shown = ", ".join(str(p) for p in existing[:4])
        more = f" and {len(existing) - 4} more" if len(existing) > 4 else ""
        raise FileExistsError(
            f"{shown}{more} already exist{'s' if len(existing) == 1 else ''}; pass --overwrite "
            "to replace them, or choose another --out"
        )


def studio(args: argparse.Namespace) -> int:
    import subprocess

    from .widgets.launch import launch

    model = args.model
    if model is not None and Path(model).expanduser().is_dir():
        # The notebook's kernel starts in the notebook's folder: a relative path must not move.
        model = str(Path(model).expanduser().resolve())
    _check_load_options(args, None)
    options = _load_options(args)
    if "transformer_file" in options:  # the kernel starts in the notebook's folder
        options["transformer_file"] = str(options["transformer_file"].expanduser().resolve())
    try:
        command = launch(
            args.folder,
            model,
            voila=args.voila,
            port=args.port,
            dry_run=args.print_command,
            load_options=options,
        )
    except RuntimeError as error:  # JupyterLab or Voila missing: say what to install
        raise FileNotFoundError(str(error)) from error
    except subprocess.CalledProcessError as error:
        # The server said why it stopped (above); its exit status is the command's.
        server = "Voila" if args.voila else "JupyterLab"
        print(
            f"seqwidgets studio: error: {server} exited with status {error.returncode}",
            file=sys.stderr,
        )
        return error.returncode
    except KeyboardInterrupt:
        return 130
    if args.print_command:
        print(" ".join(command))
    return 0


def check_paths(args: argparse.Namespace) -> None:
    """Refuse a ``--model``, ``--out``, ``--init-image`` or studio folder that cannot work, in
    one line each, before anything heavy is imported or any model loads.

    Example:
        >>> args = build_parser().parse_args(["render", "--model", "./no_such_folder"])
        >>> check_paths(args)
        Traceback (most recent call last):
        ...
        ValueError: --model ./no_such_folder: no such folder (a model is a local diffusers folder, a hub id such as 'stable-diffusion-v1-5/stable-diffusion-v1-5', or one of the random pipelines built offline: tiny-random, tiny-random-xl, tiny-random-sd3, tiny-random-flux, tiny-random-flux-schnell, tiny-random-chroma, tiny-random-lumina2, tiny-random-zimage, tiny-random-qwen-image, tiny-random-hidream, tiny-random-flux2, tiny-random-flux2-dev, random-sd15, random-sd3)
    """
    model = getattr(args, "model", None)
    if model is not None and model not in BUILT_IN_MODELS:
        _check_model(model)
    if getattr(args, "out", None) is not None:
        _check_folder("--out", args.out)
    if getattr(args, "folder", None) is not None:
        _check_folder("folder", args.folder)
    init_image = getattr(args, "init_image", None)
    if init_image is not None and not init_image.is_file():
        raise ValueError(f"--init-image {init_image}: no such file")


def _check_model(model: str) -> None:
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ValueError(
                f"--model {model}: the folder has no model_index.json, so it is not a diffusers "
                "pipeline (save one with pipe.save_pretrained(folder))"
            )
    elif path.exists():
        raise ValueError(f"--model {model}: is a file; give a diffusers pipeline folder")
    elif not HUB_ID.fullmatch(model):
        raise ValueError(
            f"--model {model}: no such folder (a model is a local diffusers folder, a hub id such "
            "as 'stable-diffusion-v1-5/stable-diffusion-v1-5', or one of the random pipelines "
            f"built offline: {', '.join(BUILT_IN_MODELS)})"
        )


def _check_folder(flag: str, folder: Path) -> None:
    # The nearest part of the path that exists must be a folder, or nothing can be written there.
    for part in (folder, *folder.parents):
        if part.exists():
            if not part.is_dir():
                where = "" if part == folder else f" ({part} is a file)"
                raise ValueError(f"{flag} {folder}: is not a folder{where}")
            return


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        # A warning is one line in the command's voice, like its errors (no source file and line).
        warnings.showwarning = _one_line_warning(args.command)
        return _run(parser, args)


def _one_line_warning(command: str):
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"seqwidgets {command}: warning: {message}", file=file or sys.stderr)

    return show


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        check_paths(args)  # before any model loads: a typo costs a second, not a minute
        if args.command == "render":
            if args.threads is not None:
                from .device import apply_cpu_threads

                apply_cpu_threads(args.threads)
            return render(args)
        if args.command == "studio":
            return studio(args)
    except (ValueError, FileExistsError, FileNotFoundError, OSError, ImportError) as error:
        print(f"seqwidgets {args.command}: error: {error}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
