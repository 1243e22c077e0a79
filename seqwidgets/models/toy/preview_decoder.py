"""A tiny decoder for live previews of the toy model: its 4x8x8 latents -> 64x64 RGB.

The toy VAE's latents are not linear in colour, so the fitted latent-to-RGB factors show where
the shape is but little of its colour. This network (three small convolutions at 8x8, a 1x1 that
writes each latent pixel's 8x8 patch, a pixel shuffle and a 3x3 that smooths the patch seams;
about 89 k parameters, 180 KB in float16) is trained by ``python -m seqwidgets.models.toy.train_preview`` to copy
the toy VAE's own decodes of the denoised estimates the toy model produces, and costs a fraction
of a VAE decode. It reads latents in diffusers' scaling (as a sampler holds them) and returns
images in [-1, 1], with the interface of diffusers' ``AutoencoderTiny`` that
`seqwidgets.decode.TAESDPreviewer` uses (``decode(x).sample``, ``config.latent_channels``).

Example:
    >>> import torch
    >>> decoder = load_preview_decoder()
    >>> decoder.decode(torch.zeros(1, 4, 8, 8)).sample.shape
    torch.Size([1, 3, 64, 64])
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

#: The trained weights, shipped with the package (written by ``train_preview.py``).
PREVIEW_DECODER_PATH: Path = Path(__file__).resolve().parent / "preview_decoder.safetensors"

#: Latent pixels -> image pixels (the toy VAE's 8x downscale).
PATCH = 8


class ToyPreviewDecoder(nn.Module):
    """Latents ``[N, 4, h, w]`` (diffusers' scaling) -> images ``[N, 3, 8h, 8w]`` in [-1, 1].

    Args:
        latent_channels (`int`, defaults to 4): channels of the latents.
        width (`int`, defaults to 64): channels of the hidden layers at latent resolution.
    """

    def __init__(self, latent_channels: int = 4, width: int = 64):
        super().__init__()
        self.config = SimpleNamespace(latent_channels=latent_channels, width=width)
        self.body = nn.Sequential(
            nn.Conv2d(latent_channels, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.SiLU(),
            # Each latent pixel writes its own 8x8 RGB patch ...
            nn.Conv2d(width, 3 * PATCH * PATCH, 1),
            nn.PixelShuffle(PATCH),
        )
        # ... and one 3x3 at full resolution blends the patches' edges.
        self.smooth = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        patches = self.body(latents)
        return (patches + self.smooth(patches)).clamp(-1, 1)

    def decode(self, latents: torch.Tensor) -> SimpleNamespace:
        """``AutoencoderTiny``'s interface: ``decode(latents).sample`` is the image batch."""
        return SimpleNamespace(sample=self(latents))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


def load_preview_decoder(path: str | Path | None = None) -> ToyPreviewDecoder:
    """The trained decoder (``PREVIEW_DECODER_PATH`` by default), in eval mode on the CPU.

    Raises:
        OSError: the file is missing or not a safetensors file.
        ValueError: its tensors do not fit ``ToyPreviewDecoder`` (names the file).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path) if path is not None else PREVIEW_DECODER_PATH
    if not path.is_file():
        raise OSError(f"{path}: the toy model's preview decoder weights are missing")
    try:
        state = load_file(str(path))
    except SafetensorError as error:
        raise OSError(f"{path}: not a safetensors file ({error})") from error
    first = state.get("body.0.weight")
    if first is None or first.ndim != 4:
        raise ValueError(f"{path}: not a toy preview decoder (no 4-d body.0.weight)")
    decoder = ToyPreviewDecoder(latent_channels=first.shape[1], width=first.shape[0])
    try:
        decoder.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as error:
        raise ValueError(f"{path}: weights do not fit ToyPreviewDecoder ({error})") from error
    return decoder.eval().requires_grad_(False)
