"""Frame: one finished loop of a run, the data every later layer reads.

It lives below the engine so that the modules measuring frames (metrics, colour coherence) and
drawing them need not import the sampler that makes them.

Example:
    >>> import torch
    >>> frame = Frame(index=0, seed=5, latent=torch.zeros(4, 8, 8), denoise=1.0,
    ...               positive=(("a red circle", 1.0),), negative=(), sigmas=torch.tensor([14.6, 0.0]))
    >>> frame.steps, frame.prompt
    (1, 'a red circle')
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .plan import PromptChain

__all__ = ["Frame"]


@dataclass(frozen=True)
class Frame:
    """One finished loop of a run.

    Attributes:
        index: the loop number, 0-based.
        seed: the seed whose CPU noise this loop used.
        latent: the loop's result ``[C, h, w]`` on the CPU, in diffusers' scaling and the
            pipeline's dtype; the next loop starts from exactly these values.
        denoise: the loop's denoise (``denoise_start`` for loop 0, ``denoise_seq`` after).
        positive, negative: the prompt chains the loop was conditioned on.
        sigmas: the slice of the noise schedule the loop ran (empty at denoise 0).
        timings: seconds spent, ``{"unsample", "sample", "total"}``.
    """

    index: int
    seed: int
    latent: torch.Tensor
    denoise: float
    positive: PromptChain
    negative: PromptChain
    sigmas: torch.Tensor
    timings: dict[str, float] = field(default_factory=dict)

    def __repr__(self) -> str:  # the latent's shape, never its values
        shape = "x".join(map(str, getattr(self.latent, "shape", ())))
        return (
            f"Frame(index={self.index}, seed={self.seed}, denoise={self.denoise}, "
            f"prompt={self.prompt!r}, latent={shape}, steps={self.steps})"
        )

    @property
    def steps(self) -> int:
        """Model steps the loop ran (``steps`` of the settings, 0 at denoise 0)."""
        return max(len(self.sigmas) - 1, 0)

    @property
    def prompt(self) -> str:
        """The positive keyframe prompt the loop's chain ends on (for captions)."""
        return self.positive[-1][0]
