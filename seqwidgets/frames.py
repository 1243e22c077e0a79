"""Frame: one finished loop of a run, the data every later layer reads, and its caption.

It lives below the engine so that the modules measuring frames (metrics, colour coherence) and
drawing them need not import the sampler that makes them.

A loop between two keyframes (keyframe interpolation, or conditioning slerp) is conditioned on a
blend of prompts; its caption says so, with the next prompt's share: ``"a green triangle → a
yellow circle, 15%"``.

Example:
    >>> import torch
    >>> frame = Frame(index=0, seed=5, latent=torch.zeros(4, 8, 8), denoise=1.0,
    ...               positive=(("a red circle", 1.0),), negative=(), sigmas=torch.tensor([14.6, 0.0]))
    >>> frame.steps, frame.prompt
    (1, 'a red circle')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .plan import PromptChain

if TYPE_CHECKING:
    import torch  # only named: captions and the studio's pure HTML load without torch

__all__ = ["Frame", "chain_blend", "chain_caption", "prompt_shares"]


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
        """What the loop's positive conditioning is, for captions: its keyframe prompt, or
        between keyframes the blend ``"a → b, 15%"`` (15% of the next prompt; see
        `chain_caption`)."""
        return chain_caption(self.positive)


def prompt_shares(chain: PromptChain) -> dict[str, float]:
    """Each prompt's share of a chain's conditioning, the newest prompt last.

    A chain starts at its first prompt and slerps by ``t`` towards each next one, so each step
    scales the earlier shares by ``1 - t`` and gives ``t`` to its prompt (slerp is not a linear
    mix; the shares say how far along each step went, which is what a caption needs).

    Example:
        >>> prompt_shares((("a", 1.0), ("b", 0.5), ("c", 0.5)))
        {'a': 0.25, 'b': 0.25, 'c': 0.5}
    """
    shares: dict[str, float] = {}
    for prompt, t in chain:  # the first item's t is 1.0: the whole share
        shares = {other: share * (1.0 - t) for other, share in shares.items()}
        shares[prompt] = shares.pop(prompt, 0.0) + t  # re-inserted: the newest comes last
    return shares


def chain_blend(chain: PromptChain) -> tuple[str, str | None, int]:
    """``(prompt, next_prompt, percent)``: a chain as the prompt it holds most of and the next
    one it moves towards, with the next one's share in whole percent; ``(prompt, None, 0)``
    when one prompt holds (its share rounds to 100%, or the other's to 0%).

    Example:
        >>> chain_blend((("a green triangle", 1.0), ("a yellow circle", 0.15)))
        ('a green triangle', 'a yellow circle', 15)
        >>> chain_blend((("a", 1.0), ("b", 0.0))), chain_blend((("a", 1.0), ("b", 1.0)))
        (('a', None, 0), ('b', None, 0))
    """
    shares = prompt_shares(chain)
    if not shares:
        return "", None, 0
    *older, newest = shares
    percent = round(100 * shares[newest])
    if not older or percent >= 100:
        return newest, None, 0
    previous = max(reversed(older), key=shares.__getitem__)  # a tie goes to the most recent
    if percent <= 0:
        return previous, None, 0
    return previous, newest, percent


def chain_caption(chain: PromptChain) -> str:
    """A chain as one line: its prompt, or ``"a → b, 15%"`` between keyframes (see `chain_blend`).

    Example:
        >>> chain_caption((("a green triangle", 1.0), ("a yellow circle", 0.15)))
        'a green triangle → a yellow circle, 15%'
        >>> chain_caption((("a red circle", 1.0),))
        'a red circle'
    """
    prompt, following, percent = chain_blend(chain)
    return prompt if following is None else f"{prompt} → {following}, {percent}%"
