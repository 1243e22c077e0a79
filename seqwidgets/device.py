"""Where a pipeline runs: the default device, how many CPU threads torch uses there, and
whether a run of a given size fits in its memory (`check_run_memory`).

torch starts one OpenMP thread per core. Each model call then waits for its slowest thread, so
when anything else holds a core (a browser, a compiler, another notebook, a shared CI runner) a
call can take ten to fifty times longer than with fewer threads. ``benchmarks/bench_threads.py``
measured this on a 2-core machine shared with other jobs (load average 6): the toy model ran
4.9 loops/s on 1 thread and 0.09 loops/s on 2; with one more busy-loop process, 1.55 against
0.21. (Four threads need four cores: not measured there.)

So on the CPU seqwidgets uses half the cores (at least one) unless told otherwise, the first time
a pipeline is loaded for the CPU. The knob, strongest first:

1. ``seqwidgets render --threads N`` or ``apply_cpu_threads(N)``;
2. the environment variable ``SEQWIDGETS_CPU_THREADS=N``;
3. ``OMP_NUM_THREADS`` set, or ``torch.set_num_threads`` called before the first load: left as is;
4. otherwise ``max(1, cores // 2)``.

Example:
    >>> cpu_threads(3)
    3
    >>> cpu_threads(None, environ={"SEQWIDGETS_CPU_THREADS": "2"})
    2
    >>> cpu_threads(None, environ={}, cores=8)
    4
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import check_one_of

if TYPE_CHECKING:
    import torch

ENV_VAR = "SEQWIDGETS_CPU_THREADS"

# Set once a thread count has been applied, so a later load never overrides the user's choice.
_applied: int | None = None


def cpu_threads(
    requested: int | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cores: int | None = None,
) -> int:
    """The number of CPU threads to use: ``requested``, else ``$SEQWIDGETS_CPU_THREADS``, else
    half the cores (at least 1).

    Raises:
        ValueError: a requested or configured count that is not a whole number >= 1.
    """
    environ = os.environ if environ is None else environ
    if requested is None and environ.get(ENV_VAR, "").strip():
        text = environ[ENV_VAR].strip()
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"{ENV_VAR}: {text!r} is not a whole number of threads >= 1")
        return int(text)
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"threads: {requested!r} is not a whole number >= 1")
        return requested
    cores = cores if cores is not None else (os.cpu_count() or 1)
    return max(1, cores // 2)


def apply_cpu_threads(requested: int | None = None) -> int:
    """Set torch's CPU thread count to `cpu_threads(requested)` and return it.

    Example:
        >>> import torch
        >>> before = torch.get_num_threads()
        >>> apply_cpu_threads(1)
        1
        >>> _ = apply_cpu_threads(before)
    """
    global _applied
    import torch

    threads = cpu_threads(requested)
    torch.set_num_threads(threads)
    _applied = threads
    return threads


def default_cpu_threads() -> int | None:
    """Apply the default thread count the first time a pipeline loads for the CPU.

    Does nothing (returns ``None``) when a count was applied already, or when the user chose one
    another way: ``OMP_NUM_THREADS`` set without ``SEQWIDGETS_CPU_THREADS``, or
    ``torch.set_num_threads`` called with a count other than torch's own default.
    """
    import torch

    if _applied is not None:
        return None
    if not os.environ.get(ENV_VAR, "").strip():
        if os.environ.get("OMP_NUM_THREADS"):
            return None
        if torch.get_num_threads() != _torch_default_threads():
            return None  # torch.set_num_threads was called: that is the user's choice
    return apply_cpu_threads()


def _torch_default_threads() -> int:
    # torch starts with one thread per core it may run on.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def usable_cores() -> int:
    """The cores this process may keep busy: those it may run on, within a container's CPU
    quota (cgroup v2 ``cpu.max``: a Binder or Kubernetes pod limited to one CPU sees every core
    of its host in ``os.cpu_count()``).

    Example:
        >>> usable_cores() >= 1
        True
    """
    cores = _torch_default_threads()
    quota = _cgroup_cpus()
    return max(1, min(cores, quota)) if quota is not None else cores


def spare_cpu_cores() -> int:
    """The usable cores left when torch's threads each hold one: where the studio can decode a
    new frame beside the sampling instead of in its way (`seqwidgets.widgets.display`).

    Example:
        >>> import torch
        >>> spare_cpu_cores() == max(0, usable_cores() - torch.get_num_threads())
        True
    """
    import torch

    return max(0, usable_cores() - torch.get_num_threads())


def _cgroup_cpus() -> int | None:
    """The CPUs a cgroup v2 quota allows (rounded up), ``None`` without a quota."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text(encoding="ascii").split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max" or not quota.isdigit() or not period.isdigit() or int(period) == 0:
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def available_devices() -> list[str]:
    """The devices a pipeline can run on here: ``cpu``, then ``cuda:0``... and ``mps`` if any.

    Example:
        >>> available_devices()[0]
        'cpu'
    """
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def check_device(device: str | torch.device, name: str = "device") -> torch.device:
    """``device`` as a `torch.device` if a pipeline can run on it here, else a `ValueError`
    in one line naming ``name`` and the devices there are (torch's own error is a traceback
    from deep inside the first tensor moved there, after the model has loaded).

    Example:
        >>> check_device("cpu")
        device(type='cpu')
        >>> check_device("tpu", "--device")
        Traceback (most recent call last):
        ...
        ValueError: --device 'tpu': not a device torch knows; available here: cpu...
    """
    import torch

    available = available_devices()
    where = f"available here: {', '.join(available)}"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name} {device!r}: not a device torch knows; {where}") from None
    if parsed.type == "cpu":
        return parsed
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if not torch.backends.cuda.is_built() else "no GPU found"
            raise ValueError(f"{name} {device!r}: this torch cannot use CUDA ({build}); {where}")
        if (parsed.index or 0) >= torch.cuda.device_count():
            raise ValueError(f"{name} {device!r}: there is no such CUDA device; {where}")
        return parsed
    if parsed.type == "mps" and "mps" in available:
        return parsed
    raise ValueError(f"{name} {device!r}: not available on this machine; {where}")


def default_device() -> torch.device:
    """CUDA when there is one, else Apple's MPS, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def module_device(module: torch.nn.Module) -> torch.device:
    """The device ``module`` computes on: where its weights are, or, under offload hooks
    (which keep them on the CPU, or layer by layer nowhere: ``meta``), the accelerator the
    hooks move them to. Inputs for the module belong there.

    Example:
        >>> import torch
        >>> module_device(torch.nn.Linear(2, 2))
        device(type='cpu')
    """
    import torch

    # Offload hooks sit on the module itself too: without one, no part of it is offloaded (and
    # a large network's thousands of parts are not walked).
    for part in module.modules() if hasattr(module, "_hf_hook") else ():
        device = getattr(getattr(part, "_hf_hook", None), "execution_device", None)
        if device is not None:
            return torch.device(device if not isinstance(device, int) else f"cuda:{device}")
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


# -- memory ------------------------------------------------------------------------------------

#: Live activation tensors of the denoising network, per channel of its finest level and per
#: latent pixel (UNet) or token (transformer), for each item of the CFG batch: an upper bound
#: read off measured peaks (benchmarks/bench_memory.py, on the CPU): SD 1.5's UNet measured ~14, the toy
#: model's ~35 (its channels are so few that fixed costs weigh more).
ACTIVATION_FACTOR = {"unet": 48, "transformer": 12}
#: Live tensors of the VAE decoder at full image resolution, per channel of its two finest
#: levels: SD 1.5's VAE measured ~3.8, the toy model's ~3.3.
DECODE_FACTOR = 5
#: Bytes per output pixel beside the decoder: the float RGB tensor, its uint8 copy, the image.
_IMAGE_BYTES = 16
#: What any model call costs beside its tensors (the kernels' first-call buffers, the
#: allocator's slack): the toy model at 512 x 512 measured ~60 MB above the formula.
FIXED_OVERHEAD = 128 * 10**6


def _gib(size: float) -> str:
    return f"{size / 1e9:.1f} GB"


def available_memory(device: str | torch.device = "cpu") -> int | None:
    """Bytes a run may still allocate on ``device``; ``None`` where that cannot be known (MPS).

    CUDA: the free memory plus what torch's allocator holds unused. CPU: the kernel's estimate
    of available memory (``MemAvailable``), within a container's cgroup limit where there is
    one; elsewhere the free physical pages.

    Example:
        >>> available_memory("cpu") > 0
        True
    """
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    if device.type != "cpu":
        return None
    available = _meminfo_available()
    limit = _cgroup_room()
    if limit is not None:
        available = limit if available is None else min(available, limit)
    return available


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:  # not Linux: the free physical pages
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _cgroup_room() -> int | None:
    """What a cgroup v2 memory limit leaves (a container may hold far less than the host)."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text(encoding="ascii").strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text(encoding="ascii").strip()
    except OSError:
        return None
    if limit == "max" or not limit.isdigit() or not used.isdigit():
        return None
    return max(0, int(limit) - int(used))


def run_memory(pipe, width: int, height: int, batch: int = 1) -> dict[str, int]:
    """An upper bound on the memory (bytes) one loop of a ``width`` x ``height`` run needs on
    the pipeline's device, by part: ``latents`` (the sampler's state), ``denoiser`` (the
    network's activations: channels x latent pixels x `ACTIVATION_FACTOR`, for the CFG pair of
    each of ``batch`` items) and ``decode`` (the VAE decoder at full resolution, which grows
    with the image's pixels and dominates at large sizes; bounded by the tile with
    ``pipe.vae.enable_tiling()``). The denoiser and the decode never run at once; ``peak`` is
    the latents plus the larger of the two. Weights already loaded are not counted: they are
    already spent when `available_memory` is read.

    Example:
        >>> from seqwidgets.testing import tiny_pipeline
        >>> small, large = (run_memory(tiny_pipeline(), side, side) for side in (64, 128))
        >>> growth = large["decode"] - small["decode"]  # in proportion to the pixels
        >>> growth == 3 * (small["decode"] - FIXED_OVERHEAD)
        True
    """
    vae_scale = getattr(pipe, "vae_scale_factor", 8)
    latent_pixels = (height // vae_scale) * (width // vae_scale)
    pixels = width * height
    vae = pipe.vae
    latent_channels = vae.config.get("latent_channels", 4)
    latents = latent_channels * latent_pixels * 4 * 16 * batch  # x, noise, history: fp32

    network = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    denoiser = 0
    if network is not None:
        config = network.config
        size = network.dtype.itemsize
        if config.get("block_out_channels"):
            per_item = config["block_out_channels"][0] * latent_pixels * ACTIVATION_FACTOR["unet"]
        else:  # a transformer over 2x2 patches of the latent
            hidden = (config.get("num_attention_heads") or 1) * (
                config.get("attention_head_dim") or 1
            )
            per_item = hidden * (latent_pixels // 4) * ACTIVATION_FACTOR["transformer"]
        denoiser = per_item * size * 2 * batch + FIXED_OVERHEAD  # the CFG pair

    channels = vae.config.get("block_out_channels") or vae.config.get("decoder_block_out_channels")
    finest = max(channels[:2]) if channels else 64
    size = 4 if vae.config.get("force_upcast") else vae.dtype.itemsize
    decoded = pixels
    if getattr(vae, "use_tiling", False):
        tile = getattr(vae, "tile_sample_min_size", 512)
        decoded = min(pixels, 4 * tile * tile)  # a tile and its overlapping neighbours
    decode = finest * decoded * size * DECODE_FACTOR + pixels * _IMAGE_BYTES + FIXED_OVERHEAD
    return {
        "latents": latents,
        "denoiser": denoiser,
        "decode": decode,
        "peak": latents + max(denoiser, decode),
    }


def check_run_memory(pipe, width: int, height: int, batch: int = 1) -> None:
    """Refuse, before the first step, a run whose `run_memory` peak exceeds what the
    pipeline's device has free (`available_memory`): a `ValueError` with both figures and the
    size that would fit, instead of minutes of work that end in an allocator error.

    Example:
        >>> from seqwidgets.testing import tiny_pipeline
        >>> check_run_memory(tiny_pipeline(), 64, 64)  # fits: nothing to say
    """
    network = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    device = module_device(network if network is not None else pipe.vae)  # offload: the GPU
    available = available_memory(device)
    if available is None:
        return
    need = run_memory(pipe, width, height, batch)
    if need["peak"] <= available:
        return
    # Memory grows with the pixels: scale both sides by the square root of the shortfall.
    scale = math.sqrt(available / need["peak"])
    fit = [max(64, int(side * scale) // 64 * 64) for side in (width, height)]
    parts = f"the VAE decode {_gib(need['decode'])}, the denoiser {_gib(need['denoiser'])}"
    tiling = ""
    if need["decode"] > need["denoiser"] and not getattr(pipe.vae, "use_tiling", True):
        tiling = ", or decode in tiles: pipe.vae.enable_tiling()"
    items = f" for {batch} branches" if batch > 1 else ""
    raise ValueError(
        f"width, height: {width}x{height}{items} needs about {_gib(need['peak'])} of "
        f"{device.type.upper()} memory ({parts}) and {_gib(available)} is free; lower width "
        f"and height (about {fit[0]}x{fit[1]} fits){tiling}"
    )


def check_image_memory(width: int, height: int, what: str, lower: str) -> None:
    """Refuse an image of ``width`` x ``height`` that would not fit in the CPU's free memory
    (Pillow holds RGB in 4 bytes a pixel): a `ValueError` naming ``what``, both figures, and
    the arguments to ``lower``.

    Example:
        >>> check_image_memory(10**6, 10**6, "contact sheet", "cell or columns")
        Traceback (most recent call last):
        ...
        ValueError: contact sheet: 1000000x1000000 pixels need about 4000.0 GB of memory and ...
    """
    need = width * height * 4
    available = available_memory("cpu")
    if available is not None and need > available:
        raise ValueError(
            f"{what}: {width}x{height} pixels need about {_gib(need)} of memory and "
            f"{_gib(available)} is free; lower {lower}"
        )


# -- weights of the large models ---------------------------------------------------------------


@dataclass(frozen=True)
class ModelSize:
    """A released model's parameter counts, by pipeline component, in billions.

    Attributes:
        label: the model's name (``"FLUX.1 dev"``).
        hub_id: where it is on the Hugging Face hub.
        family: its `seqwidgets.families` name.
        components: ``{component: (billions of parameters, blocks)}``: the blocks (transformer
            blocks, text-model layers) bound what layer-by-layer offload holds at once.
        source: where the counts come from.
    """

    label: str
    hub_id: str
    family: str
    components: dict[str, tuple[float, int]]
    source: str

    def quantized(self) -> tuple[str, ...]:
        """The components ``quantize`` applies to: the network and the text encoders of 1B
        parameters or more (`Family.large_text_encoders`; the CLIPs are all under 1B)."""
        return tuple(
            name
            for name, (billions, _) in self.components.items()
            if name in ("unet", "transformer")
            or (name.startswith("text_encoder") and billions >= 1)
        )


# Counts as the model cards and papers give them (rounded as they round them); the CLIPs and
# VAEs from their diffusers configs: CLIP-L 123M, OpenCLIP bigG 695M, the Flux/SD VAE 84M.
_CLIP_L, _CLIP_G, _T5 = (0.123, 12), (0.695, 32), (4.76, 24)
_VAE = (0.084, 4)
#: The models the memory table covers.
MODEL_SIZES: dict[str, ModelSize] = {
    size.label: size
    for size in (
        ModelSize(
            "SD 1.5",
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            "sd",
            {"unet": (0.86, 16), "text_encoder": _CLIP_L, "vae": _VAE},
            "SD model card (UNet 860M)",
        ),
        ModelSize(
            "SDXL",
            "stabilityai/stable-diffusion-xl-base-1.0",
            "sdxl",
            {"unet": (2.57, 16), "text_encoder": _CLIP_L, "text_encoder_2": _CLIP_G, "vae": _VAE},
            "SDXL paper (UNet 2.6B)",
        ),
        ModelSize(
            "SD 3.5 large",
            "stabilityai/stable-diffusion-3.5-large",
            "sd3",
            {
                "transformer": (8.1, 38),
                "text_encoder": _CLIP_L,
                "text_encoder_2": _CLIP_G,
                "text_encoder_3": _T5,
                "vae": _VAE,
            },
            "model card (MMDiT 8.1B); T5-XXL encoder 4.76B",
        ),
        ModelSize(
            "FLUX.1 dev",
            "black-forest-labs/FLUX.1-dev",
            "flux-dev",
            {
                "transformer": (11.9, 57),
                "text_encoder": _CLIP_L,
                "text_encoder_2": _T5,
                "vae": _VAE,
            },
            "model card (12B); FIELD-NOTES: ~34 GB in bf16",
        ),
        ModelSize(
            "Chroma",
            "lodestones/Chroma1-HD",
            "chroma",
            {"transformer": (8.9, 57), "text_encoder": _T5, "vae": _VAE},
            "model card (8.9B)",
        ),
        ModelSize(
            "FLUX.2 dev",
            "black-forest-labs/FLUX.2-dev",
            "flux2",
            {"transformer": (32.0, 56), "text_encoder": (24.0, 40), "vae": _VAE},
            "model card (32B; Mistral Small 3.1 24B text encoder)",
        ),
        ModelSize(
            "FLUX.2 klein 4B",
            "black-forest-labs/FLUX.2-klein-4B",
            "flux2-klein",
            {"transformer": (4.0, 25), "text_encoder": (4.0, 36), "vae": _VAE},
            "model card (4B; Qwen3-4B text encoder)",
        ),
        ModelSize(
            "Qwen-Image",
            "Qwen/Qwen-Image",
            "qwen-image",
            {"transformer": (20.4, 60), "text_encoder": (8.3, 28), "vae": (0.127, 4)},
            "model card (20B MMDiT; Qwen2.5-VL 7B with its vision tower 8.3B)",
        ),
        ModelSize(
            "HiDream-I1",
            "HiDream-ai/HiDream-I1-Full",
            "hidream",
            {
                "transformer": (17.0, 48),
                "text_encoder": _CLIP_L,
                "text_encoder_2": _CLIP_G,
                "text_encoder_3": _T5,
                "text_encoder_4": (8.0, 32),
                "vae": _VAE,
            },
            "model card (17B; Llama 3.1 8B)",
        ),
        ModelSize(
            "Lumina 2",
            "Alpha-VLLM/Lumina-Image-2.0",
            "lumina2",
            {"transformer": (2.6, 26), "text_encoder": (2.6, 26), "vae": _VAE},
            "model card (2.6B; Gemma 2 2B)",
        ),
        ModelSize(
            "Z-Image Turbo",
            "Tongyi-MAI/Z-Image-Turbo",
            "z-image",
            {"transformer": (6.15, 34), "text_encoder": (4.0, 36), "vae": _VAE},
            "model card (6B); Qwen3-4B text encoder",
        ),
    )
}

#: Bytes a weight takes in each setting: bf16/fp16, bitsandbytes LLM.int8 (one byte; its
#: per-row scales are negligible), NF4 (half a byte plus one fp32 scale per 64 weights).
BYTES_PER_WEIGHT = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "8bit": 1.0, "4bit": 0.5 + 4 / 64}
#: What a run needs beside the weights, in the table's estimate: the CUDA context, the
#: activations and the VAE decode of a 1024 x 1024 image (`run_memory` gives a pipeline's own).
RUN_HEADROOM = int(2.5e9)
#: The cards the table covers (GB); the last stands for 40 GB and more.
CARD_SIZES = (12, 16, 24, 40)
#: Settings the table tries, best first: full precision, then quantized, then offloaded.
WEIGHT_SETTINGS = (
    ("bf16", None),
    ("8bit", None),
    ("4bit", None),
    ("bf16", "model"),
    ("8bit", "model"),
    ("4bit", "model"),
    ("bf16", "sequential"),
)


def weight_memory(
    model: str | ModelSize,
    *,
    dtype: str = "bf16",
    quantize: str | None = None,
    offload: str | None = None,
) -> int:
    """An estimate (bytes) of the weights a released model keeps on the accelerator while it
    samples, from its parameter counts (`MODEL_SIZES`): an estimate, not a measurement.

    ``quantize`` ("8bit", "4bit") applies to the network and the family's large text encoders
    (as ``load_pipeline`` quantizes them); the rest stays in ``dtype``. ``offload="model"``
    holds one whole component at a time (the largest counts), ``"sequential"`` one block.

    Example:
        >>> round(weight_memory("FLUX.1 dev") / 1e9, 1)  # FIELD-NOTES: ~34 GB in bf16
        33.7
        >>> round(weight_memory("FLUX.1 dev", quantize="4bit") / 1e9, 1)
        9.8
        >>> weight_memory("FLUX.1 dev", quantize="4bit", offload="model") < 8e9
        True
    """
    size = model if isinstance(model, ModelSize) else MODEL_SIZES.get(model)
    if size is None:
        check_one_of("model", model, tuple(MODEL_SIZES))
    check_one_of("dtype", dtype, ("bf16", "fp16", "fp32"))
    check_one_of("quantize", quantize, ("4bit", "8bit"), optional=True)
    check_one_of("offload", offload, ("model", "sequential"), optional=True)
    quantized = size.quantized() if quantize else ()
    parts = []
    for name, (billions, blocks) in size.components.items():
        setting = quantize if name in quantized else dtype
        weights = billions * 1e9 * BYTES_PER_WEIGHT[setting]
        parts.append(weights / blocks if offload == "sequential" else weights)
    return int(max(parts) if offload else sum(parts))


def fitting_settings(model: str | ModelSize, card_gb: float) -> list[str]:
    """The `WEIGHT_SETTINGS` whose `weight_memory` plus `RUN_HEADROOM` fits a card of
    ``card_gb`` GB, best first, named as ``load_pipeline`` takes them.

    Example:
        >>> fitting_settings("FLUX.1 dev", 24)[:2]
        ['8bit', '4bit']
    """
    fits = []
    for dtype, offload in WEIGHT_SETTINGS:
        quantize = dtype if dtype in ("8bit", "4bit") else None
        need = weight_memory(model, quantize=quantize, offload=offload) + RUN_HEADROOM
        if need <= card_gb * 1e9:
            fits.append(dtype if offload is None else f"{dtype} + {offload} offload")
    return fits


def weight_memory_table(cards: tuple[int, ...] = CARD_SIZES) -> str:
    """The Markdown table of `MODEL_SIZES` x cards: the weights in bf16 / 8bit / 4bit, and per
    card the settings that fit without offload (or, when none does, the best one with it).

    Example:
        >>> weight_memory_table().splitlines()[0].startswith("| model | family | bf16 |")
        True
    """
    header = ["model", "family", "bf16", "8bit", "4bit"]
    header += [f"{gb}+ GB" if gb == cards[-1] else f"{gb} GB" for gb in cards]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for size in MODEL_SIZES.values():
        cells = [f"{size.label} (`{size.hub_id}`)", f"`{size.family}`"]
        for quantize in (None, "8bit", "4bit"):
            cells.append(_gib(weight_memory(size, quantize=quantize)))
        for gb in cards:
            fits = fitting_settings(size, gb)
            plain = [setting for setting in fits if "offload" not in setting]
            cells.append(", ".join(plain) if plain else (fits[0] if fits else "does not fit"))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)
