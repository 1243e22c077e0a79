"""Train the toy text-to-image model and write it as a diffusers pipeline folder.

    python -m seqwidgets.models.toy.train --out DIR [--threads 1] [--seed 0]

1. Train the VAE (``AutoencoderKL``, 64x64x3 <-> 4x8x8) on freshly drawn pictures: L1 + MSE
   reconstruction and a small KL term.
2. Encode a bank of pictures once; fit ``scaling_factor`` = 1 / std of the latents, and the
   latent-to-RGB preview factors.
3. Train the text encoder and the UNet together, from scratch, on the bank: SD's epsilon objective
   on SD 1.5's noise schedule (min-SNR weighting), captions of random detail, 10% empty captions
   for classifier-free guidance, an EMA of the weights.
4. Save ``StableDiffusionPipeline`` (EMA weights, safetensors, no safety checker) and
   ``toy_model.json`` (settings, timings, fitted factors).

Seeded: the same arguments and torch build give the same weights. Run time on 2 CPU cores
(one thread): see docs/toy_model.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import string
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .architecture import (
    SCHEDULER_CONFIG,
    make_scheduler,
    make_text_encoder,
    make_unet,
    make_vae,
    write_tokenizer,
)
from .dataset import ShapesDataset, to_tensor_range
from .latent_rgb import fit_latent_rgb, patch_means
from .vocab import COLORS, POSITIONS, SHAPES, SIZES, random_caption


def _log(msg: str, t0: float):
    print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)


def _lr(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_vae(args, t0: float):
    """Step 1: the autoencoder, on pictures drawn afresh every step."""
    torch.manual_seed(args.seed)
    vae = make_vae()
    data = ShapesDataset(args.seed + 1)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    vae.train()
    ema_loss = None
    for step in range(args.vae_steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, args.vae_steps, args.vae_lr, 100)
        images, _ = data.sample(args.vae_batch)
        x = torch.from_numpy(to_tensor_range(images))
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        rec = F.l1_loss(recon, x) + F.mse_loss(recon, x)
        kl = posterior.kl().mean() / (4 * 8 * 8)  # per latent element
        loss = rec + args.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        ema_loss = rec.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * rec.item()
        if step % 50 == 0 or step == args.vae_steps - 1:
            _log(f"vae {step}/{args.vae_steps} rec {ema_loss:.4f} kl {kl.item():.2f}", t0)
    vae.eval()
    return vae


@torch.no_grad()
def encode_bank(vae, n: int, seed: int, t0: float):
    """Step 2: encode ``n`` fresh pictures; keep posterior mean/std, labels and 8x8 patch means."""
    data = ShapesDataset(seed)
    means, stds, patches, labels = [], [], [], []
    for start in range(0, n, 256):
        images, lab = data.sample(min(256, n - start))
        x = to_tensor_range(images)
        post = vae.encode(torch.from_numpy(x)).latent_dist
        means.append(post.mean)
        stds.append(post.std)
        patches.append(patch_means(x))
        labels.append(np.stack([lab.color, lab.shape, lab.position, lab.size], axis=1))
    _log(f"encoded {n} pictures", t0)
    return torch.cat(means), torch.cat(stds), np.concatenate(patches), np.concatenate(labels)


def _junk_word(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 8)))


def sample_caption(rng: random.Random, label: np.ndarray, dropout: float) -> str:
    """A training caption: empty with probability ``dropout`` (for CFG), else of random detail.

    A few captions are unknown words alone (the model learns to treat them like ""), or carry an
    unknown word (ignored), so a negative prompt such as "blurry" acts like an empty one.
    """
    u = rng.random()
    if u < dropout:
        return ""
    if u < dropout + 0.02:
        return " ".join(_junk_word(rng) for _ in range(rng.randint(1, 3)))
    text = random_caption(
        rng, COLORS[label[0]], SHAPES[label[1]], POSITIONS[label[2]], SIZES[label[3]]
    )
    if rng.random() < 0.05:
        text += rng.choice([", ", " "]) + _junk_word(rng)
    return text


def train_diffusion(args, tokenizer, means, stds, labels, t0: float):
    """Step 3: text encoder + UNet, from scratch, with an EMA copy of both."""
    torch.manual_seed(args.seed + 2)
    text_encoder = make_text_encoder(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    # CLIP initialises token embeddings at std 0.02: trained from scratch with them, the text
    # encoder gave "on the left" and "on the right" almost the same output and the UNet never
    # learnt position (run 1: position accuracy 33%, chance). Unit-scale embeddings make every
    # word distinct from the first step.
    torch.nn.init.normal_(text_encoder.get_input_embeddings().weight, std=1.0)
    unet = make_unet()
    scheduler = make_scheduler()
    alphas_cumprod = scheduler.alphas_cumprod.float()
    snr = alphas_cumprod / (1 - alphas_cumprod)
    weights = torch.clamp(snr, max=args.min_snr_gamma) / snr  # min-SNR-gamma, epsilon target

    models = torch.nn.ModuleList([text_encoder, unet]).train()
    ema = copy.deepcopy(models).eval().requires_grad_(False)
    opt = torch.optim.AdamW(models.parameters(), lr=args.lr, weight_decay=0.01)
    rng = random.Random(args.seed + 3)
    gen = torch.Generator().manual_seed(args.seed + 4)
    token_cache: dict[str, list[int]] = {}

    def tokenize(texts: list[str]) -> torch.Tensor:
        missing = [t for t in set(texts) if t not in token_cache]
        if missing:
            ids = tokenizer(
                missing,
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
            ).input_ids
            token_cache.update(zip(missing, ids, strict=True))
        return torch.tensor([token_cache[t] for t in texts])

    scale = args.scaling_factor
    n = len(means)
    ema_loss = None
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, args.steps, args.lr, 200)
        idx = torch.randint(0, n, (args.batch,), generator=gen)
        latents = (means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=gen)) * scale
        texts = [sample_caption(rng, labels[i], args.caption_dropout) for i in idx.tolist()]
        ids = tokenize(texts)
        t = torch.randint(0, len(alphas_cumprod), (args.batch,), generator=gen)
        noise = torch.randn(latents.shape, generator=gen)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        hidden = text_encoder(ids)[0]
        pred = unet(noisy, t, hidden).sample
        loss = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        loss = (loss * weights[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(models.parameters(), 1.0)
        opt.step()
        decay = min(args.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            e = list(ema.parameters())
            torch._foreach_lerp_(e, [p.detach() for p in models.parameters()], 1 - decay)
        ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
        if step % 100 == 0 or step == args.steps - 1:
            _log(f"unet {step}/{args.steps} loss {ema_loss:.4f} lr {g['lr']:.2e}", t0)
    return ema[0], ema[1]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, help="folder to write the pipeline to")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)"
    )
    p.add_argument("--vae-steps", type=int, default=1000)
    p.add_argument("--vae-batch", type=int, default=24)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--kl-weight", type=float, default=3e-4)
    p.add_argument(
        "--vae-from", default=None, help="reuse the VAE of a pipeline folder (skip step 1)"
    )
    p.add_argument("--bank", type=int, default=16000, help="pictures encoded for steps 2-3")
    p.add_argument("--steps", type=int, default=3000, help="text encoder + UNet steps")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--min-snr-gamma", type=float, default=5.0)
    p.add_argument("--ema-decay", type=float, default=0.999)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timings = {}

    if args.vae_from:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(Path(args.vae_from) / "vae").eval()
        vae.register_to_config(scaling_factor=1.0)
        _log(f"VAE loaded from {args.vae_from}", t0)
    else:
        vae = train_vae(args, t0)
        vae.save_pretrained(out / "vae")  # early, so a later run can reuse it with --vae-from
    timings["vae_s"] = round(time.time() - t0, 1)

    means, stds, patches, labels = encode_bank(vae, args.bank, args.seed + 5, t0)
    args.scaling_factor = float(1.0 / means.std())  # noise std is negligible beside it
    vae.register_to_config(scaling_factor=args.scaling_factor)
    factors, bias = fit_latent_rgb((means * args.scaling_factor).numpy(), patches)
    _log(f"scaling_factor {args.scaling_factor:.4f}; latent std {stds.mean():.4f} (posterior)", t0)
    timings["bank_s"] = round(time.time() - t0 - timings["vae_s"], 1)

    tokenizer = write_tokenizer(out / "tokenizer")
    t1 = time.time()
    text_encoder, unet = train_diffusion(args, tokenizer, means, stds, labels, t0)
    timings["diffusion_s"] = round(time.time() - t1, 1)

    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=make_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    write_tokenizer(out / "tokenizer")  # keep our own vocab.json / merges.txt as written
    timings["total_s"] = round(time.time() - t0, 1)
    info = {
        "args": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "timings": timings,
        "scaling_factor": args.scaling_factor,
        "latent_rgb_factors": factors.round(4).tolist(),
        "latent_rgb_bias": bias.round(4).tolist(),
        "scheduler": SCHEDULER_CONFIG,
    }
    (out / "toy_model.json").write_text(json.dumps(info, indent=1) + "\n")
    _log(f"wrote {out} ({timings})", t0)


if __name__ == "__main__":
    main()
