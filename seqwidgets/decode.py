"""Latents -> images: VAE decode and encode, latent-to-RGB previews, thumbnails, a decoded-image cache.

Latents in seqwidgets are in diffusers' scaling: the VAE latent times ``vae.config.scaling_factor``
(minus ``shift_factor`` first, where the VAE has one), as float tensors ``[C, h, w]`` or
``[N, C, h, w]``. ``decode_latents`` and ``encode_image`` undo and apply that scaling, so the rest
of the toolkit never does.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ._loading import quiet_loading
from .device import module_device
from .families import (
    FAMILIES,
    FLUX_LATENT_RGB_BIAS,
    FLUX_LATENT_RGB_FACTORS,
    SD3_LATENT_RGB_BIAS,
    SD3_LATENT_RGB_FACTORS,
    SD15_LATENT_RGB_FACTORS,
    SDXL_LATENT_RGB_BIAS,
    SDXL_LATENT_RGB_FACTORS,
    detect_family,
    latent_format,
)

__all__ = [
    "FLUX_LATENT_RGB_BIAS",
    "FLUX_LATENT_RGB_FACTORS",
    "PREVIEWS",
    "SD3_LATENT_RGB_BIAS",
    "SD3_LATENT_RGB_FACTORS",
    "SD15_LATENT_RGB_FACTORS",
    "SDXL_LATENT_RGB_BIAS",
    "SDXL_LATENT_RGB_FACTORS",
    "TAESD_MODELS",
    "ImageCache",
    "TAESDPreviewer",
    "decode_latents",
    "encode_image",
    "latent_to_rgb",
    "make_previewer",
    "preview_factors",
    "thumbnail",
    "to_rgba_array",
]


# Upcasting mutates the VAE (as diffusers' pipelines do), so VAE calls from this module are
# serialised: a preview thread must not see the VAE half-cast by a decode in another thread.
# The lock is taken per chunk, so a long decode lets other decodes interleave.
_VAE_LOCK = threading.RLock()


@contextmanager
def _vae_for_use(vae):
    """Hold the VAE lock; run an fp16 VAE with ``force_upcast`` in fp32 (it overflows in fp16).

    Yields the dtype inputs must have. Mirrors diffusers' SDXL pipelines, which cast the VAE to
    fp32 for the call and back to fp16 afterwards.
    """
    with _VAE_LOCK:
        dtype = vae.dtype  # read once: diffusers walks the modules to answer it
        if dtype == torch.float16 and vae.config.get("force_upcast", False):
            vae.to(dtype=torch.float32)
            try:
                yield torch.float32
            finally:
                vae.to(dtype=torch.float16)
        else:
            yield dtype


def _unscale(vae, latents: torch.Tensor) -> torch.Tensor:
    """Diffusers' scaling -> raw VAE latents (`seqwidgets.families.latent_format`)."""
    return latent_format(vae).process_out(latents)


def _scale(vae, latents: torch.Tensor) -> torch.Tensor:
    """Raw VAE latents -> diffusers' scaling (`seqwidgets.families.latent_format`)."""
    return latent_format(vae).process_in(latents)


def _to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """``[N, 3, H, W]`` in [-1, 1] -> uint8 ``[N, H, W, 3]`` (converted on the device, then moved)."""
    images = (images.float() / 2 + 0.5).clamp(0, 1)
    images = (images * 255).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def decode_latents(vae, latents: torch.Tensor, *, batch_size: int = 8) -> list[Image.Image]:
    """Decode latents in diffusers' scaling to RGB images.

    Args:
        vae (`AutoencoderKL` or `AutoencoderTiny`): the decoder. It stays on its device; the
            latents are moved there and cast to its dtype. An fp16 VAE whose config sets
            `force_upcast` decodes in fp32, as diffusers' pipelines do.
        latents (`torch.Tensor`): `[C, h, w]` or `[N, C, h, w]`, VAE latents times
            `scaling_factor`. Not modified.
        batch_size (`int`, defaults to 8): latents decoded per VAE call; lower it to save memory.

    Returns:
        `list[PIL.Image.Image]`: one RGB image per latent, `N` of them (1 for `[C, h, w]`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if latents.ndim == 3:
        latents = latents.unsqueeze(0)
    if latents.ndim != 4:
        raise ValueError(
            f"latents must be [C, h, w] or [N, C, h, w], got shape {tuple(latents.shape)}"
        )
    fmt = latent_format(vae)
    expected = fmt.channels
    if latents.shape[1] != expected:
        raise ValueError(
            f"latents have {latents.shape[1]} channels but the VAE expects {expected} "
            f"(shape {tuple(latents.shape)})"
        )

    images: list[Image.Image] = []
    for start in range(0, latents.shape[0], batch_size):
        chunk = latents[start : start + batch_size]
        with torch.no_grad(), _vae_for_use(vae) as dtype:
            chunk = _unscale(vae, chunk.to(device=module_device(vae), dtype=dtype))
            decoded = fmt.from_vae(vae.decode(fmt.to_vae(chunk)).sample)
            pixels = _to_uint8_hwc(decoded)
        images.extend(Image.fromarray(p) for p in pixels)
    return images


def _image_to_tensor(image, size: tuple[int, int] | None, multiple: int) -> torch.Tensor:
    """PIL image, uint8 array or float tensor in [0, 1] -> float32 ``[1, 3, H, W]`` in [0, 1]."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(
                f"a numpy image must be uint8 [H, W, 3], got dtype {image.dtype}; "
                "pass a float torch.Tensor [3, H, W] in [0, 1] instead"
            )
        image = Image.fromarray(image)
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
        if size is None:
            size = (image.width - image.width % multiple, image.height - image.height % multiple)
        if size != image.size:
            image = image.resize(size, Image.Resampling.LANCZOS)
        array = np.asarray(image, dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)
    if isinstance(image, torch.Tensor):
        if not image.is_floating_point():
            raise TypeError(f"a tensor image must be float in [0, 1], got dtype {image.dtype}")
        x = image.detach().float()
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4 or x.shape[:2] != (1, 3):
            raise ValueError(
                f"a tensor image must be [3, H, W] or [1, 3, H, W], got {tuple(image.shape)}"
            )
        if x.min() < 0 or x.max() > 1:
            raise ValueError(
                f"a tensor image must have values in [0, 1], got [{x.min():.3g}, {x.max():.3g}]"
            )
        height, width = x.shape[-2:]
        if size is None:
            size = (width - width % multiple, height - height % multiple)
        if size != (width, height):
            x = F.interpolate(x, size=(size[1], size[0]), mode="bicubic", antialias=True)
            x = x.clamp(0, 1)
        return x.cpu()
    raise TypeError(
        f"image must be a PIL image, a uint8 numpy array or a float tensor, got {type(image).__name__}"
    )


def encode_image(vae, image, *, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Encode an init image to a latent in diffusers' scaling.

    Args:
        vae (`AutoencoderKL` or `AutoencoderTiny`): the encoder.
        image (`PIL.Image.Image`, `np.ndarray` or `torch.Tensor`): a PIL image, a uint8 array
            `[H, W, 3]` (or `[H, W]`, `[H, W, 4]`), or a float tensor `[3, H, W]` / `[1, 3, H, W]`
            with values in [0, 1].
        size (`tuple[int, int]`, *optional*): `(width, height)` to resize to; each must be a
            multiple of the VAE's downsampling factor. Defaults to the image's size rounded down
            to a multiple of 8.

    Returns:
        `torch.Tensor`: float32 CPU `[1, C, height / f, width / f]`, the latent distribution's
        mode times `scaling_factor` (after subtracting `shift_factor`, if any).
    """
    # diffusers' vae_scale_factor; AutoencoderTiny (no block_out_channels) downsamples by 8.
    blocks = vae.config.get("block_out_channels")
    factor = 2 ** (len(blocks) - 1) if blocks is not None else 8
    if size is not None:
        width, height = size
        if width < factor or height < factor or width % factor or height % factor:
            raise ValueError(
                f"size must be (width, height), each a positive multiple of {factor} "
                f"(the VAE's downsampling factor), got {size}"
            )
    multiple = max(8, factor)
    x = _image_to_tensor(image, size, multiple)
    if x.shape[-1] < factor or x.shape[-2] < factor:
        raise ValueError(
            f"image is too small to encode: {x.shape[-1]}x{x.shape[-2]} after rounding down "
            f"to a multiple of {multiple}"
        )
    with torch.no_grad(), _vae_for_use(vae) as dtype:
        fmt = latent_format(vae)
        output = vae.encode(fmt.to_vae((x * 2 - 1).to(device=module_device(vae), dtype=dtype)))
        # AutoencoderKL returns a distribution; AutoencoderTiny returns the latents directly.
        dist = getattr(output, "latent_dist", None)
        latents = dist.mode() if dist is not None else output.latents
        latents = _scale(vae, fmt.from_vae(latents))
    return latents.float().cpu()


def latent_to_rgb(latents, factors, bias=None) -> np.ndarray:
    """ComfyUI's cheap preview: a linear map from latent channels to RGB, no VAE.

    Args:
        latents (`torch.Tensor`): `[C, h, w]` or `[1, C, h, w]` in diffusers' scaling. Never
            modified (the map works on a copy), so it is safe on a latent mid-sampling.
        factors: `[C, 3]` (nested sequence, array or tensor), rows are channels.
        bias: `[3]` or `None`.

    Returns:
        `np.ndarray`: uint8 `[h, w, 3]`, `((x @ factors + bias) + 1) / 2` clamped to [0, 1].
    """
    x = torch.as_tensor(latents).detach()
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f"latent_to_rgb takes one latent, got a batch of {x.shape[0]}")
        x = x[0]
    if x.ndim != 3:
        raise ValueError(f"latents must be [C, h, w] or [1, C, h, w], got {tuple(x.shape)}")
    x = x.to(dtype=torch.float32, copy=True)
    factors_t = torch.as_tensor(factors, dtype=torch.float32, device=x.device)
    if factors_t.shape != (x.shape[0], 3):
        raise ValueError(
            f"factors must be [C, 3] = [{x.shape[0]}, 3] for these latents, "
            f"got {tuple(factors_t.shape)}"
        )
    rgb = x.permute(1, 2, 0) @ factors_t
    if bias is not None:
        rgb = rgb + torch.as_tensor(bias, dtype=torch.float32, device=x.device)
    rgb = ((rgb + 1) / 2).clamp(0, 1)
    return (rgb * 255).round().to(torch.uint8).cpu().numpy()


def preview_factors(pipe):
    """The latent-to-RGB factors for a pipeline: `(factors, bias)` or `None` if unknown.

    `pipe.seqwidgets_latent_rgb` (a `(factors, bias)` tuple set by the loader, e.g. fitted
    factors for the toy model) wins; otherwise ComfyUI's factors for the pipeline's family
    (`seqwidgets.families.detect_family`): SD 1.5's, SDXL's, SD3's or Flux's.

    Example:
        >>> from seqwidgets.testing import tiny_pipeline
        >>> factors, bias = preview_factors(tiny_pipeline("sd3"))
        >>> len(factors), bias
        (16, (0.2394, 0.2135, 0.1925))
    """
    custom = getattr(pipe, "seqwidgets_latent_rgb", None)
    if custom is not None:
        factors, bias = custom
        return factors, bias
    try:
        family = detect_family(pipe)
    except ValueError:
        return None
    return family.latent_rgb


#: The TAESD-family decoder for each model family: an ``AutoencoderTiny`` hub id, or where
#: `seqwidgets.tiny_decoders` reads TAEF2 (Flux.2) and TAEW2.1 (Qwen-Image) from.
TAESD_MODELS: dict[str, str] = {
    name: family.taesd for name, family in FAMILIES.items() if family.taesd is not None
}

#: A live previewer: ``previewer(denoised_latent) -> image``, or ``None`` when it skips a step.
Previewer = Callable[[torch.Tensor], "Image.Image | None"]


class TAESDPreviewer:
    """Decodes mid-sampling estimates with a tiny TAESD decoder (or the toy model's own preview
    decoder, which has the same interface), at a bounded rate.

    The decoder reads latents in the model's scaling, as ComfyUI's TAESD previewer decodes its
    ``x0`` (so the ``AutoencoderTiny`` config's own scaling is not applied). It works on a copy
    of the latent (ComfyUI bug #13366: decoding the live tensor in place corrupts sampling).

    The rate is bounded so previews cost at most ``budget`` of the wall time: after a decode
    that took ``t`` seconds the next one waits at least ``max(min_interval, t / budget)``.
    Skipped calls return ``None`` at once; ``force=True`` decodes regardless (a final frame).

    Args:
        decoder: an ``AutoencoderTiny`` (or anything with ``decode(x).sample`` and ``config``).
        budget (`float`, defaults to 0.1): the most wall time spent decoding, as a fraction.
        min_interval (`float`, defaults to 0.1): seconds between previews at the least.
        clock: seconds counter (``time.monotonic``); tests pass a fake one.

    Attributes:
        decodes (`int`), seconds (`float`): decodes done and the time they took.

    Example:
        >>> from diffusers import AutoencoderTiny
        >>> tiny = AutoencoderTiny(encoder_block_out_channels=(8,) * 4,
        ...     decoder_block_out_channels=(8,) * 4, num_encoder_blocks=(1,) * 4,
        ...     num_decoder_blocks=(1,) * 4, latent_channels=4)
        >>> previewer = TAESDPreviewer(tiny)
        >>> previewer(torch.zeros(4, 8, 8)).size
        (64, 64)
    """

    def __init__(self, decoder, *, budget: float = 0.1, min_interval: float = 0.1, clock=None):
        if not 0 < budget <= 1:
            raise ValueError(f"budget must be in (0, 1], got {budget!r}")
        import time

        self.decoder = decoder.eval()
        self.budget, self.min_interval = float(budget), float(min_interval)
        self._clock = clock or time.monotonic
        self._next = float("-inf")
        self.decodes, self.seconds = 0, 0.0
        self.latent_channels = int(decoder.config.latent_channels)

    @classmethod
    def load(
        cls, pipe, source=None, *, local_files_only: bool = False, **options
    ) -> TAESDPreviewer:
        """The TAESD decoder for ``pipe``'s family (`TAESD_MODELS`), or from ``source`` (a hub
        id or a local folder in diffusers layout; for Flux.2 and Qwen-Image, whose decoders
        ``AutoencoderTiny`` cannot load, what `seqwidgets.tiny_decoders` reads: a hub id,
        folder, address or ``.safetensors`` file), on the pipeline's device and dtype.

        Raises:
            OSError: it cannot be downloaded (offline) or read.
            ValueError: its latent channels do not match the pipeline's.
        """
        family = detect_family(pipe)
        if source is None and family.taesd is None:
            raise ValueError(f"no TAESD decoder is known for {family.label}; pass source=")
        source = source if source is not None else family.taesd
        network = family.denoiser_network(pipe)
        if local_files_only or Path(str(source)).exists():
            decoder = _load_tiny_decoder(family, source, local_files_only=local_files_only)
        else:
            decoder = _cached_or_downloaded(family, source)
        decoder = decoder.to(device=module_device(network), dtype=network.dtype)
        channels = family.latent_channels(pipe)
        if decoder.config.latent_channels != channels:
            raise ValueError(
                f"{source}: a TAESD decoder for {decoder.config.latent_channels}-channel latents; "
                f"this {family.label} pipeline has {channels} (use {family.taesd})"
            )
        return cls(decoder, **options)

    @torch.no_grad()
    def __call__(self, latent: torch.Tensor, *, force: bool = False) -> Image.Image | None:
        now = self._clock()
        if not force and now < self._next:
            return None
        x = latent.detach()
        x = x[None] if x.ndim == 3 else x[:1]
        if x.shape[1] != self.latent_channels:
            raise ValueError(
                f"latent has {x.shape[1]} channels, the preview decoder {self.latent_channels}"
            )
        param = next(self.decoder.parameters())
        x = x.to(device=param.device, dtype=param.dtype, copy=True)
        image = Image.fromarray(_to_uint8_hwc(self.decoder.decode(x).sample)[0])
        took = self._clock() - now
        self.decodes += 1
        self.seconds += took
        self._next = now + max(self.min_interval, took / self.budget)
        return image


#: The previews ``make_previewer`` knows; ``"auto"`` picks the best one the pipeline carries.
PREVIEWS = ("auto", "latent_rgb", "taesd")


def make_previewer(
    pipe, preview: str = "auto", *, source=None, local_files_only: bool = False
) -> tuple[Previewer | None, str]:
    """The live previewer a studio asks for, and a note for the user.

    ``preview="auto"`` (the default): the pipeline's own preview decoder when its loader gave
    it one (``pipe.seqwidgets_preview_decoder``, a no-argument function returning a decoder with
    ``AutoencoderTiny``'s interface: the shipped toy model's tiny decoder, which shows colour as
    well as shape), run as a `TAESDPreviewer`; otherwise the latent-to-RGB preview.
    ``"latent_rgb"``: ComfyUI's linear latent-to-RGB map (`preview_factors`), every step, nearly
    free. ``"taesd"``: a `TAESDPreviewer` (from the hub when online, or ``source``). A decoder
    that cannot be loaded falls back to latent-to-RGB, with a note saying why. Returns
    ``(None, note)`` when no preview is known for the pipeline.

    Example:
        >>> from seqwidgets.testing import tiny_pipeline
        >>> previewer, note = make_previewer(tiny_pipeline("flux"))
        >>> previewer(torch.zeros(16, 8, 8)).size, note
        ((8, 8), 'latent-to-RGB preview')
    """
    if preview not in PREVIEWS:
        raise ValueError(
            f"preview must be one of {', '.join(map(repr, PREVIEWS))}, got {preview!r}"
        )
    fallback = ""
    own = getattr(pipe, "seqwidgets_preview_decoder", None)
    if preview == "auto" and own is not None:
        try:
            decoder = own().to(device=module_device(pipe.vae))
            return TAESDPreviewer(decoder), "preview decoder"
        except (OSError, ValueError, ImportError) as error:
            fallback = f"preview decoder unavailable ({error}); "
    if preview == "taesd":
        try:
            return TAESDPreviewer.load(
                pipe, source, local_files_only=local_files_only
            ), "TAESD preview"
        except (OSError, ValueError, ImportError) as error:
            fallback = f"TAESD preview unavailable ({error}); "
    found = preview_factors(pipe)
    if not found:
        return None, fallback + "no preview for this pipeline"
    factors, bias = found

    def latent_rgb(latent: torch.Tensor) -> Image.Image:
        return Image.fromarray(latent_to_rgb(latent, factors, bias))

    return latent_rgb, fallback + "latent-to-RGB preview"


def _load_tiny_decoder(family, source, *, local_files_only: bool):
    with quiet_loading():
        if family.taesd_loader is not None:
            return family.taesd_loader(source, local_files_only=local_files_only)
        from diffusers import AutoencoderTiny

        return AutoencoderTiny.from_pretrained(
            str(source), local_files_only=local_files_only, use_safetensors=True
        )


def _cached_or_downloaded(family, source):
    """The tiny decoder from the local cache when it is there, else downloaded.

    Before a download, one quick connection check of its host: without it an offline machine
    waits through the hub client's retries (about 20 s) before the preview falls back to
    latent-to-RGB.

    Raises:
        OSError: not cached, and its host does not answer within `HOST_TIMEOUT_S`.
    """
    try:
        return _load_tiny_decoder(family, source, local_files_only=True)
    except OSError:
        pass
    address = download_address(source)
    if not host_reachable(address):
        host = address[0] or "the hub (HF_HUB_OFFLINE)"
        raise OSError(f"offline: {host} cannot be reached and {source} is not cached")
    return _load_tiny_decoder(family, source, local_files_only=False)


#: How long a download host may take to accept a connection before a preview decoder gives up.
HOST_TIMEOUT_S = 3.0


def download_address(source) -> tuple[str, int]:
    """The host and port a tiny decoder would be downloaded from: a URL's own, else the hub's.

    Example:
        >>> download_address("https://github.com/madebyollin/taehv/raw/main/x.safetensors")
        ('github.com', 443)
        >>> download_address("http://127.0.0.1:9/taew2_1.safetensors")
        ('127.0.0.1', 9)
    """
    from urllib.parse import urlparse

    text = str(source)
    if "://" not in text:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return "", 0  # the hub is off by the user's own setting
        text = constants.ENDPOINT
    url = urlparse(text)
    return url.hostname or "", url.port or (80 if url.scheme == "http" else 443)


def host_reachable(address: tuple[str, int], timeout: float = HOST_TIMEOUT_S) -> bool:
    """Whether ``(host, port)`` accepts a TCP connection within ``timeout`` seconds."""
    import socket

    if not address[0]:
        return False
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False


def thumbnail(image: Image.Image, size: int | tuple[int, int]) -> Image.Image:
    """Fit an image into `size` (a square side or `(width, height)`), keeping its aspect.

    Downscaling uses LANCZOS. Upscaling uses NEAREST, so tiny images (a 64x64 toy model's)
    stay crisp, and stops at 4x. Returns a new image; the input is not modified.
    """
    box_w, box_h = (size, size) if isinstance(size, int) else size
    if box_w < 1 or box_h < 1:
        raise ValueError(f"thumbnail size must be positive, got {size}")
    scale = min(box_w / image.width, box_h / image.height, 4.0)
    new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if new_size == image.size:
        return image.copy()
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    return image.resize(new_size, resample)


def to_rgba_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """uint8 `[h, w, 4]` RGBA pixels, for lossless transfer to a canvas (RGB would go as JPEG)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    return np.array(image.convert("RGBA"), dtype=np.uint8)


_BYTES_PER_BAND = {"I": 4, "F": 4, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}


def _nbytes(image) -> int:
    """Pixel bytes of a PIL image (or array), without copying its pixels."""
    if isinstance(image, np.ndarray):
        return int(image.nbytes)
    per_band = _BYTES_PER_BAND.get(image.mode, 1)
    return image.width * image.height * len(image.getbands()) * per_band


class _Pending:
    """A value being made by one thread, which others asking for the same key wait on."""

    def __init__(self):
        self.done = threading.Event()
        self.value = None
        self.ok = False


class ImageCache:
    """A thread-safe LRU of decoded images, bounded by item count and optionally by bytes.

    `get(key, make)` returns the cached image or calls `make()` to produce it (e.g. a VAE decode)
    and caches the result. Evicted images are simply made again on demand. `make` runs outside
    the lock, so cache hits from other threads are never blocked by a slow decode; concurrent
    requests for the same missing key wait for the one `make()` call instead of repeating it.

    Args:
        max_items (`int`, defaults to 256): most images held.
        max_bytes (`int`, *optional*): most pixel bytes held (width * height * bands). An image
            larger than this on its own is returned but not cached.
    """

    def __init__(self, max_items: int = 256, max_bytes: int | None = None):
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1 or None, got {max_bytes}")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[Image.Image, int]] = OrderedDict()
        self._pending: dict[Hashable, _Pending] = {}
        self._nbytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], Image.Image]) -> Image.Image:
        """The image for `key`, made with `make()` and cached if absent."""
        while True:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key][0]
                pending = self._pending.get(key)
                owner = pending is None
                if owner:
                    pending = self._pending[key] = _Pending()
            if owner:
                break
            pending.done.wait()
            if pending.ok:
                return pending.value
            # The owner's make() raised: loop, and this thread tries (and may raise) itself.

        try:
            value = make()
        except BaseException:
            with self._lock:
                del self._pending[key]
            pending.done.set()
            raise
        with self._lock:
            del self._pending[key]
            self._insert(key, value)
        pending.value, pending.ok = value, True
        pending.done.set()
        return value

    def put(self, key: Hashable, image: Image.Image) -> None:
        """Cache `image` under `key` (replacing any image there), e.g. one decoded eagerly."""
        with self._lock:
            self._insert(key, image)

    def _insert(self, key, image) -> None:
        if key in self._items:
            self._nbytes -= self._items.pop(key)[1]
        size = _nbytes(image)
        if self.max_bytes is not None and size > self.max_bytes:
            return
        self._items[key] = (image, size)
        self._nbytes += size
        while len(self._items) > self.max_items or (
            self.max_bytes is not None and self._nbytes > self.max_bytes
        ):
            _, (_, evicted) = self._items.popitem(last=False)
            self._nbytes -= evicted

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def keys(self) -> list[Hashable]:
        """Cached keys, least recently used first."""
        with self._lock:
            return list(self._items)

    @property
    def nbytes(self) -> int:
        """Pixel bytes held."""
        with self._lock:
            return self._nbytes

    def discard(self, which: Callable[[Hashable], bool]) -> int:
        """Drop every image whose key ``which(key)`` is true (e.g. a deleted branch's); returns
        how many were dropped. The rest keep their LRU order.

        Example:
            >>> cache = ImageCache()
            >>> for key in [(1, 0), (1, 1), (2, 0)]:
            ...     cache.put(key, Image.new("RGB", (4, 4)))
            >>> cache.discard(lambda key: key[0] == 1), cache.keys()
            (2, [(2, 0)])
        """
        with self._lock:
            doomed = [key for key in self._items if which(key)]
            for key in doomed:
                self._nbytes -= self._items.pop(key)[1]
            return len(doomed)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._nbytes = 0
