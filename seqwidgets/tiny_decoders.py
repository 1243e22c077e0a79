"""Tiny preview decoders that diffusers' ``AutoencoderTiny`` cannot load: TAEF2 (Flux.2) and
TAEW2.1 (the Wan 2.1 latent of Qwen-Image).

Both are madebyollin's distilled decoders (MIT licence), written here from their reference code
(github.com/madebyollin/taesd ``taesd.py``, github.com/madebyollin/taehv ``taehv.py``) with
the same module layout, so the published weight files load into them as they are:

- **TAEF2** (``madebyollin/taef2`` on the hub, ``taef2.safetensors``): TAESD's decoder for 32
  channels whose first three blocks add a pooled, group-normalised branch. It decodes Flux.2's
  latent as the transformer samples it, normalised by the VAE's batch-norm statistics and
  unpatched, ``[32, h, w]``: seqwidgets' layout. The file uses ``AutoencoderTiny``'s key names
  (``decoder.layers.N``) for a network ``AutoencoderTiny`` does not have.
- **TAEW2.1** (``taew2_1.safetensors`` in github.com/madebyollin/taehv): TAEHV's decoder, a
  video decoder whose blocks also read the previous frame ("memory") and which makes four
  frames of each latent frame. A picture is one latent frame: the decoder runs on it with an
  empty memory and keeps the last of its four frames, as TAEHV's ``decode_video`` does for a
  one-frame latent. It reads Wan 2.1 latents after their per-channel normalisation: seqwidgets'
  Qwen-Image latents.

Both return images in [-1, 1] as ``decode(x).sample``, with ``config.latent_channels``: the
interface `seqwidgets.decode.TAESDPreviewer` reads.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "TAEF2_FILE",
    "TAEF2_HUB_ID",
    "TAEW21_URL",
    "TAEF2Decoder",
    "TAEW21Decoder",
    "load_taef2",
    "load_taew21",
]

#: Where the weights are published.
TAEF2_HUB_ID = "madebyollin/taef2"
TAEF2_FILE = "taef2.safetensors"
TAEW21_URL = "https://github.com/madebyollin/taehv/raw/main/safetensors/taew2_1.safetensors"


def _conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


def _three_convs(n_in: int, channels: int) -> nn.Sequential:
    """The residual branch of both decoders' blocks: three 3x3 convolutions with ReLUs."""
    return nn.Sequential(
        _conv(n_in, channels),
        nn.ReLU(),
        _conv(channels, channels),
        nn.ReLU(),
        _conv(channels, channels),
    )


class _Clamp(nn.Module):
    """A soft clamp of the latent to about [-3, 3] (the decoders were trained on that range)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class _Block(nn.Module):
    """TAESD's residual block; with ``pooled``, first a 1x1 branch with group norm (TAEF2)."""

    def __init__(self, channels: int, pooled: bool = False):
        super().__init__()
        self.conv = _three_convs(channels, channels)
        self.skip = nn.Identity()
        self.fuse = nn.ReLU()
        self.pool = None
        if pooled:
            wide = channels * 4
            self.pool = nn.Sequential(
                nn.Conv2d(channels, wide, 1, bias=False),
                nn.GroupNorm(4, wide),
                nn.ReLU(),
                nn.Conv2d(wide, channels, 1, bias=False),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


class TAEF2Decoder(nn.Module):
    """TAEF2's decoder: Flux.2 latents ``[N, 32, h, w]`` (normalised, unpatched) -> images
    ``[N, 3, 8h, 8w]``.

    Example:
        >>> decoder = TAEF2Decoder()
        >>> decoder.decode(torch.zeros(1, 32, 4, 4)).sample.shape
        torch.Size([1, 3, 32, 32])
    """

    def __init__(self, latent_channels: int = 32):
        super().__init__()
        self.config = SimpleNamespace(latent_channels=latent_channels)
        layers: list[nn.Module] = [_Clamp(), _conv(latent_channels, 64), nn.ReLU()]
        for stage in range(3):
            layers += [_Block(64, pooled=stage == 0) for _ in range(3)]
            layers += [nn.Upsample(scale_factor=2), _conv(64, 64, bias=False)]
        layers += [_Block(64), _conv(64, 3)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Latents -> pixels in about [0, 1], TAESD's range."""
        return self.layers(x)

    def decode(self, x: torch.Tensor) -> SimpleNamespace:
        """``AutoencoderTiny``'s call: ``.sample`` in [-1, 1]."""
        return SimpleNamespace(sample=self(x).clamp(0, 1) * 2 - 1)

    def load_file_state_dict(self, weights: dict[str, torch.Tensor]) -> None:
        """Load ``taef2.safetensors``' decoder: ``decoder.layers.N.*`` (``AutoencoderTiny``'s
        names, without TAESD's clamp at 0) are this network's layers ``N + 1``."""
        decoder = {}
        for key, value in weights.items():
            part, _, index, *rest = key.split(".")
            if part == "decoder":
                decoder[".".join([str(int(index) + 1), *rest])] = value
        _load(self.layers, decoder, "TAEF2")


class _MemoryBlock(nn.Module):
    """TAEHV's block: a residual block that also reads the same features of the previous frame."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = _three_convs(channels * 2, channels)
        self.skip = nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(torch.cat([x, past], 1)) + self.skip(x))


class _TimeGrow(nn.Module):
    """TAEHV's temporal upsampling: each frame's features become ``stride`` frames'."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(channels, channels * stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames, channels, height, width = x.shape
        return self.conv(x).reshape(frames * self.stride, channels, height, width)


class TAEW21Decoder(nn.Module):
    """TAEW2.1's decoder (TAEHV for Wan 2.1) on one latent frame: normalised Wan 2.1 latents
    ``[N, 16, h, w]`` -> images ``[N, 3, 8h, 8w]``.

    Example:
        >>> decoder = TAEW21Decoder()
        >>> decoder.decode(torch.zeros(1, 16, 2, 2)).sample.shape
        torch.Size([1, 3, 16, 16])
    """

    #: Output frames made per latent frame, of which a picture keeps the last.
    FRAMES = 4

    def __init__(self, latent_channels: int = 16):
        super().__init__()
        self.config = SimpleNamespace(latent_channels=latent_channels)
        widths = (256, 128, 64, 64)
        layers: list[nn.Module] = [_Clamp(), _conv(latent_channels, widths[0]), nn.ReLU()]
        for stage, time_stride in enumerate((1, 2, 2)):
            layers += [_MemoryBlock(widths[stage]) for _ in range(3)]
            layers += [
                nn.Upsample(scale_factor=2),
                _TimeGrow(widths[stage], time_stride),
                _conv(widths[stage], widths[stage + 1], bias=False),
            ]
        layers += [nn.ReLU(), _conv(widths[3], 3)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One latent frame per item ``[N, C, h, w]`` -> its picture in about [0, 1]."""
        last_memory = max(
            i for i, layer in enumerate(self.layers) if isinstance(layer, _MemoryBlock)
        )
        pictures = []
        for latent in x.split(1):
            frames = latent  # [frames, C, h, w], one video: frames in time order
            for i, layer in enumerate(self.layers):
                if isinstance(layer, _MemoryBlock):
                    # each frame reads the previous one; the first an empty memory
                    past = F.pad(frames, (0, 0, 0, 0, 0, 0, 1, 0))[:-1]
                    frames = layer(frames, past)
                else:
                    frames = layer(frames)
                if i == last_memory:
                    # the layers after work frame by frame: only the last frame's are needed
                    # (the full-size ones, the most costly)
                    frames = frames[-1:]
            pictures.append(frames[-1:])
        return torch.cat(pictures)

    def decode(self, x: torch.Tensor) -> SimpleNamespace:
        """``AutoencoderTiny``'s call: ``.sample`` in [-1, 1]."""
        return SimpleNamespace(sample=self(x).clamp(0, 1) * 2 - 1)

    def load_file_state_dict(self, weights: dict[str, torch.Tensor]) -> None:
        """Load ``taew2_1.safetensors``' decoder (``decoder.N.*``, TAEHV's names). A temporal
        layer stored with more output frames than this decoder makes keeps its last ones, as
        TAEHV's ``patch_tgrow_layers`` does."""
        own = self.layers.state_dict()
        decoder = {}
        for key, value in weights.items():
            part, _, rest = key.partition(".")
            if part != "decoder":
                continue
            if rest in own and value.shape[0] > own[rest].shape[0]:
                value = value[-own[rest].shape[0] :]
            decoder[rest] = value
        _load(self.layers, decoder, "TAEW2.1")


def _load(layers: nn.Module, weights: dict[str, torch.Tensor], name: str) -> None:
    """Load a decoder's weights, or say in one line that they are not this decoder's."""
    try:
        layers.load_state_dict(weights)
    except RuntimeError as error:
        first = str(error).splitlines()[1:2] or [str(error)]
        raise ValueError(f"not {name} decoder weights: {first[0].strip()}") from None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    return load_file(str(path))


def load_taef2(source: str | Path | None = None, *, local_files_only: bool = False) -> TAEF2Decoder:
    """TAEF2's decoder with its weights: from ``source`` (a ``.safetensors`` file, or a folder
    or hub id holding ``taef2.safetensors``), by default the hub's ``madebyollin/taef2``.

    Raises:
        OSError: the file cannot be downloaded (offline) or read.
    """
    source = TAEF2_HUB_ID if source is None else source
    path = Path(str(source)).expanduser()
    if path.is_dir():
        path = path / TAEF2_FILE
    elif path.suffix != ".safetensors":
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(str(source), TAEF2_FILE, local_files_only=local_files_only))
    decoder = TAEF2Decoder()
    decoder.load_file_state_dict(_read_safetensors(path))
    return decoder.eval()


def load_taew21(
    source: str | Path | None = None, *, local_files_only: bool = False
) -> TAEW21Decoder:
    """TAEW2.1's decoder with its weights: from ``source`` (a ``.safetensors`` file or an
    address of one), by default `TAEW21_URL`, downloaded once into torch's hub cache.

    Raises:
        OSError: the file cannot be downloaded (offline) or read.
    """
    source = TAEW21_URL if source is None else str(source)
    if "://" in source:
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(source).name
        if not cache.is_file():
            if local_files_only:
                raise FileNotFoundError(f"{cache}: not downloaded yet (local_files_only)")
            cache.parent.mkdir(parents=True, exist_ok=True)
            try:
                torch.hub.download_url_to_file(source, str(cache), progress=False)
            except Exception as error:  # URLError, HTTPError, timeouts: all say "offline"
                raise OSError(f"cannot download {source}: {error}") from error
        path = cache
    else:
        path = Path(source).expanduser()
    decoder = TAEW21Decoder()
    decoder.load_file_state_dict(_read_safetensors(path))
    return decoder.eval()
