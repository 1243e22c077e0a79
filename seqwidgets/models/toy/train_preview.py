"""Train the toy model's preview decoder and measure it against the fitted latent-to-RGB factors.

    python -m seqwidgets.models.toy.train_preview [--out FILE] [--threads 1] [--seed 0]

1. Latents the toy model really produces: the shipped pipeline runs two-loop sequences through
   seqwidgets' engine ("0: a red circle on the left / 1: a blue square" at denoise 0.6, as the
   studio runs them) over the grammar's prompts, several samplers and seeds, and every step's
   denoised estimate is kept (what a live preview shows mid-loop), so early blurry estimates and
   finished pictures are both in the data.
2. Targets: the toy VAE's own decodes of those latents.
3. ``ToyPreviewDecoder`` is trained on them (L1 + MSE, Adam, cosine schedule); every sixth run is
   held out.
4. On the held-out latents, the decoder and the fitted factors are scored against the VAE decode
   (PSNR, pixel error, the shape's colour error, the shape's mask IoU), and the decode cost of
   each is timed. Weights go to ``--out`` as float16 safetensors, the figures to a ``.json``
   beside them.

Seeded: the same arguments, torch build and thread count give the same weights.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .preview_decoder import PREVIEW_DECODER_PATH, ToyPreviewDecoder
from .vocab import COLORS, POSITIONS, SHAPES

#: Samplers the training runs cycle through (deterministic and ancestral estimates differ).
SAMPLERS = ("euler", "dpmpp_2m", "euler_ancestral", "ddim")


def prompts() -> list[str]:
    """Every "a {color} {shape} on the {position}" and every plain "a {color} {shape}"."""
    placed = [
        f"a {c} {s} on the {p}" if p != "center" else f"a {c} {s} in the center"
        for c, s, p in itertools.product(COLORS, SHAPES, POSITIONS)
    ]
    return placed + [f"a {c} {s}" for c, s in itertools.product(COLORS, SHAPES)]


def collect_latents(
    runs: int, seed: int, steps: int = 20, log=print
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Every step's denoised estimate of ``runs`` two-loop sequences of the shipped toy model.

    Returns ``(latents [n, 4, 8, 8], keys)``: the latents in diffusers' scaling and, for each,
    ``(run, loop)`` it came from (to hold out whole runs, and find each loop's last estimate).
    """
    from ...engine import SequenceSampler
    from ...params import SequenceParams
    from .. import load_pipeline

    pipe = load_pipeline()
    sampler = SequenceSampler(pipe)
    rng = random.Random(seed)
    texts = prompts()
    latents, keys = [], []
    for run in range(runs):
        first, second = rng.choice(texts), rng.choice(texts)
        params = SequenceParams(
            positive_seq=f"0: {first}\n1: {second}",
            sequence_loop_count=2,
            steps=steps,
            cfg=rng.choice((3.0, 5.0, 7.5)),
            sampler_name=SAMPLERS[run % len(SAMPLERS)],
            scheduler="normal",
            denoise_seq=rng.choice((0.4, 0.6, 0.8)),
            seed=rng.randrange(2**31),
        )

        def keep(loop, step, sigma, denoised, run=run):
            latents.append(denoised[:1].detach().float().cpu().clone())
            keys.append((run, loop))

        sampler.sample(params, callback=keep)
        if (run + 1) % 20 == 0:
            log(f"{run + 1}/{runs} runs, {len(latents)} latents")
    return torch.cat(latents), keys


@torch.no_grad()
def vae_decode(vae, latents: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """The toy VAE's decode of latents in diffusers' scaling: float ``[n, 3, 64, 64]`` in [-1, 1]."""
    scale = vae.config.scaling_factor
    out = [
        vae.decode(latents[i : i + batch] / scale).sample.clamp(-1, 1)
        for i in range(0, len(latents), batch)
    ]
    return torch.cat(out)


def factors_preview(latents: torch.Tensor, factors, bias) -> torch.Tensor:
    """The latent-to-RGB preview as the studio shows it: ``latent @ factors + bias`` per latent
    pixel, stretched bilinearly to the image size. ``[n, 3, 64, 64]`` in [-1, 1]."""
    f = torch.as_tensor(factors, dtype=torch.float32)
    b = torch.as_tensor(bias, dtype=torch.float32)
    rgb = torch.einsum("nchw,cr->nrhw", latents, f) + b.view(1, 3, 1, 1)
    rgb = F.interpolate(rgb.clamp(-1, 1), scale_factor=8, mode="bilinear", align_corners=False)
    return rgb.clamp(-1, 1)


def _masks(images255: torch.Tensor, threshold: float = 40.0) -> torch.Tensor:
    """Where the shape is: pixels farther than ``threshold`` (RGB, 0-255) from the background,
    taken as the median colour of the image's border."""
    border = torch.cat(
        [images255[..., 0, :], images255[..., -1, :], images255[..., :, 0], images255[..., :, -1]],
        dim=-1,
    )
    background = border.median(dim=-1).values[..., None, None]
    return (images255 - background).norm(dim=1) > threshold


def fidelity(preview: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """How close previews are to the VAE decodes (both ``[n, 3, H, W]`` in [-1, 1]).

    * ``psnr_db``: PSNR over all pixels (peak 255).
    * ``pixel_error``: mean absolute error per channel, in 0-255.
    * ``shape_color_error``: the shape's mean colour (where the VAE decode shows the shape)
      against the VAE decode's, mean absolute error per channel, in 0-255.
    * ``shape_iou``: intersection over union of the shape's masks.

    The shape figures are over the latents whose decode shows a shape of 16 pixels or more.
    """
    p = (preview.float() + 1) * 127.5
    r = (reference.float() + 1) * 127.5
    mse = ((p - r) ** 2).mean(dim=(1, 2, 3))
    psnr = (10 * torch.log10(255.0**2 / mse.clamp_min(1e-6))).mean()
    ref_mask, pre_mask = _masks(r), _masks(p)
    has = ref_mask.sum(dim=(1, 2)) >= 16
    m = ref_mask[has].unsqueeze(1).float()
    area = m.sum(dim=(2, 3))
    colour_p = (p[has] * m).sum(dim=(2, 3)) / area
    colour_r = (r[has] * m).sum(dim=(2, 3)) / area
    inter = (ref_mask[has] & pre_mask[has]).sum(dim=(1, 2)).float()
    union = (ref_mask[has] | pre_mask[has]).sum(dim=(1, 2)).float()
    return {
        "psnr_db": round(float(psnr), 2),
        "pixel_error": round(float((p - r).abs().mean()), 2),
        "shape_color_error": round(float((colour_p - colour_r).abs().mean()), 2),
        "shape_iou": round(float((inter / union).mean()), 3),
        "latents": len(p),
        "with_shape": int(has.sum()),
    }


@torch.no_grad()
def cost_ms(decode, latent: torch.Tensor, repeats: int = 200) -> float:
    """Median milliseconds of ``decode(latent)`` on one latent, after a warm-up."""
    for _ in range(5):
        decode(latent)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        decode(latent)
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 3)


def train(decoder, latents, targets, *, steps: int, batch: int, lr: float, seed: int, log=print):
    """Fit ``decoder`` to ``targets`` (L1 + MSE), Adam with warm-up and a cosine decay."""
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=lr)
    warmup = max(1, steps // 20)
    decoder.train()
    for step in range(steps):
        scale = (
            (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * step / steps))
        )
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        pick = torch.randint(len(latents), (batch,), generator=gen)
        out = decoder(latents[pick])
        loss = F.l1_loss(out, targets[pick]) + F.mse_loss(out, targets[pick])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 500 == 0:
            log(f"step {step + 1}/{steps}: loss {loss.item():.4f}")
    return decoder.eval()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PREVIEW_DECODER_PATH)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--runs", type=int, default=120, help="two-loop sequences to collect")
    parser.add_argument("--steps", type=int, default=3000, help="training steps")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args(argv)

    t0 = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:6.1f}s] {msg}", flush=True)

    from safetensors.torch import save_file

    from . import LATENT_RGB_BIAS, LATENT_RGB_FACTORS, load_toy_pipeline

    # Set before the pipeline loads, which then keeps this count (seqwidgets.device).
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    latents, keys = collect_latents(args.runs, args.seed, log=log)
    collect_s = time.time() - t0
    vae = load_toy_pipeline().vae.eval()
    targets = vae_decode(vae, latents)
    held = torch.tensor([run % 6 == 5 for run, _ in keys])
    # A loop's last estimate is its finished picture (the next latent is another loop's).
    last = torch.tensor([a != b for a, b in zip(keys, keys[1:] + [None], strict=True)])
    log(f"{len(latents)} latents, {int(held.sum())} held out; VAE decodes done")

    t1 = time.time()
    decoder = ToyPreviewDecoder()
    train(
        decoder,
        latents[~held],
        targets[~held],
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed + 1,
        log=log,
    )
    train_s = time.time() - t1
    # float16 on disk halves the file; the previews it gives differ by under 1/255.
    state = {k: v.detach().half().contiguous() for k, v in decoder.state_dict().items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(args.out))
    decoder.load_state_dict({k: v.float() for k, v in state.items()})

    with torch.no_grad():
        test, ref = latents[held], targets[held]
        final = last[held]
        ours = decoder(test)
        linear = factors_preview(test, LATENT_RGB_FACTORS, LATENT_RGB_BIAS)
        one = test[:1]
        costs = {
            "decoder_ms": cost_ms(decoder, one),
            "vae_ms": cost_ms(lambda x: vae.decode(x / vae.config.scaling_factor).sample, one),
            "factors_ms": cost_ms(
                lambda x: factors_preview(x, LATENT_RGB_FACTORS, LATENT_RGB_BIAS), one
            ),
        }
    result = {
        # (the file's name only: where it was written is no part of the record)
        "args": {k: v.name if isinstance(v, Path) else v for k, v in vars(args).items()},
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "parameters": sum(p.numel() for p in decoder.parameters()),
        "file_bytes": args.out.stat().st_size,
        "latents": {"train": int((~held).sum()), "held_out": int(held.sum())},
        "held_out_all_steps": {"decoder": fidelity(ours, ref), "factors": fidelity(linear, ref)},
        "held_out_final_step": {
            "decoder": fidelity(ours[final], ref[final]),
            "factors": fidelity(linear[final], ref[final]),
        },
        "cost_per_image_ms": costs,
        "timings": {"collect_s": round(collect_s, 1), "train_s": round(train_s, 1)},
    }
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    log(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
