"""The empty latent as ComfyUI leaves it: zeros in model space, also on SD3 and Flux.

ComfyUI's ``CFGGuider.sample`` runs ``process_latent_in`` only when the latent has a non-zero
value ("Don't shift the empty latent image"), so on the families whose latent format shifts
(SD3, Flux) loop 0 from an empty latent mixes its noise with zeros. At ``denoise_start < 1`` the
start latent shows in the result, so a shifted empty latent would change loop 0.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import seqwidgets as sw
from seqwidgets.testing import tiny_pipeline

pytestmark = pytest.mark.filterwarnings("ignore:Should have t")

PROMPT = "a red circle"


def settings(**changes) -> sw.SequenceParams:
    base = dict(
        positive_seq=f"0: {PROMPT}",
        seed=3,
        steps=3,
        cfg=1.0,
        sampler_name="euler",
        scheduler="simple",
        sequence_loop_count=1,
        denoise_start=0.7,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sw.SequenceParams(**{**base, **changes})


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_sd3_loop0_at_denoise_0_7_is_comfyuis_reading_with_zeros():
    # An independent reading of ComfyUI's loop 0: denoise 0.7 with 3 steps is the tail of the
    # 4-step `simple` schedule of SD3's table (shift 3): sigmas 0.9, 0.75, 0.5, then 0. The
    # start is 0.9 * noise + 0.1 * 0 (CONST noise scaling of the *unshifted* empty latent),
    # then Euler steps with the transformer at timestep sigma * 1000.
    pipe = tiny_pipeline("sd3")
    frame = next(sw.SequenceSampler(pipe).frames(settings()))
    torch.testing.assert_close(frame.sigmas, torch.tensor([0.9, 0.75, 0.5, 0.0]))

    with torch.no_grad():
        cond, _, pooled, _ = pipe.encode_prompt(
            PROMPT, PROMPT, PROMPT, do_classifier_free_guidance=False
        )
        noise = torch.randn([1, 16, 8, 8], generator=torch.manual_seed(frame.seed))
        sigmas = [0.9, 0.75, 0.5, 0.0]
        x = sigmas[0] * noise + (1 - sigmas[0]) * torch.zeros_like(noise)
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:], strict=True):
            v = pipe.transformer(
                hidden_states=x,
                timestep=torch.tensor([sigma * 1000.0]),
                encoder_hidden_states=cond,
                pooled_projections=pooled,
                return_dict=False,
            )[0]
            x = x + v * (sigma_next - sigma)  # Euler: (x - denoised) / sigma = v
    assert relative_l2(frame.latent, x[0]) < 1e-5


@pytest.mark.parametrize("kind", ["sd3", "flux", "flux-schnell"])
def test_empty_latent_runs_as_an_explicit_zero_latent(kind):
    pipe = tiny_pipeline(kind)
    sampler = sw.SequenceSampler(pipe)
    params = settings(scheduler="karras", denoise_start=0.5)
    empty = sampler.initial_latent(params)
    assert not empty.any()
    from_empty = sampler.sample(params)
    from_zeros = sampler.sample(params, latent_image=torch.zeros(empty.shape))
    assert torch.equal(from_empty, from_zeros)
    # ... and not as the latent format's shifted zero, (0 - shift_factor) * scaling_factor
    config = pipe.vae.config
    shifted = torch.full(empty.shape, -config.shift_factor * config.scaling_factor)
    assert relative_l2(sampler.sample(params, latent_image=shifted), from_empty) > 1e-3
