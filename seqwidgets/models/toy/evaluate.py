"""Score the toy model: does it draw what the prompt asks?

    python -m seqwidgets.models.toy.evaluate [--model DIR] [--seeds 2] [--sheet PNG]

1. Train a small classifier (color, shape, position and size heads) on the dataset's own labelled
   pictures, seeded, and check it on held-out ones (it should be ~100% there), or load it.
2. Generate, with the pipeline at its default settings (its own scheduler, 20 steps, CFG 7.5),
   one picture per seed for every (color, shape, position) prompt, "a red circle on the left", and
   for every plain prompt, "a red circle".
3. Report the classifier's agreement with the prompts: color / shape / position accuracy.
4. Run the README's quickstart sequence, "0: a red circle / 6: a blue square" at denoise 0.6 (img2img), and
   classify its last frames.
5. Write a contact sheet: rows = colors, columns = shape x position (first seed), and the
   sequence of step 4 under it.

    python -m seqwidgets.models.toy.evaluate --few-steps seqwidgets/models/toy/few_steps.json

instead scores few-step settings (`few_steps_table`): seqwidgets' own engine runs a four-loop
sequence per plain prompt ("0: a red circle", loops 1-3 at denoise 0.5, Euler, normal schedule)
for every steps x cfg pair, and the classifier says how often loop 0 and loops 1-3 have the asked
color. This is what chooses the toy model's live preset (`seqwidgets.presets`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from . import DEFAULTS, TOY_MODEL_PATH
from .dataset import ShapesDataset, to_tensor_range
from .vocab import COLORS, POSITIONS, SHAPES, SIZES, caption

HEADS = {"color": COLORS, "shape": SHAPES, "position": POSITIONS, "size": SIZES}


class Classifier(torch.nn.Module):
    """A small CNN with one linear head per attribute, on 64x64 pictures in [-1, 1]."""

    def __init__(self):
        super().__init__()
        layers, c = [], 3
        for width in (16, 32, 64, 64):
            layers += [torch.nn.Conv2d(c, width, 3, stride=2, padding=1), torch.nn.GELU()]
            c = width
        self.features = torch.nn.Sequential(*layers, torch.nn.Flatten())
        self.heads = torch.nn.ModuleDict(
            {k: torch.nn.Linear(64 * 4 * 4, len(v)) for k, v in HEADS.items()}
        )

    def forward(self, x):
        h = self.features(x)
        return {k: head(h) for k, head in self.heads.items()}


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur some pictures a little and add noise: generated pictures are not as crisp as drawn ones."""
    blur = torch.rand(len(x), 1, 1, 1, generator=gen) < 0.5
    soft = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    x = torch.where(blur, soft, x)
    return x + 0.04 * torch.randn(x.shape, generator=gen)


def train_classifier(steps: int = 1200, seed: int = 100, log=print) -> Classifier:
    """Step 1: the classifier, on freshly drawn pictures."""
    torch.manual_seed(seed)
    model = Classifier()
    data = ShapesDataset(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for step in range(steps):
        images, lab = data.sample(64)
        x = _augment(torch.from_numpy(to_tensor_range(images)), gen)
        out = model(x)
        loss = sum(F.cross_entropy(out[k], torch.from_numpy(getattr(lab, k)).long()) for k in HEADS)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 200 == 0:
            log(f"classifier {step}/{steps} loss {loss.item():.3f}")
    model.eval()
    images, lab = ShapesDataset(seed + 1).sample(512)
    pred = classify(model, images)
    held_out = {k: float((pred[k] == getattr(lab, k)).mean()) for k in HEADS}
    log(f"classifier held-out accuracy {held_out}")
    return model


@torch.no_grad()
def classify(model: Classifier, images: np.ndarray) -> dict[str, np.ndarray]:
    """``uint8 [n, 64, 64, 3]`` -> predicted attribute indices per head."""
    out = model(torch.from_numpy(to_tensor_range(images)))
    return {k: v.argmax(dim=1).numpy() for k, v in out.items()}


def load_pipeline(model: str | Path):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        model, safety_checker=None, requires_safety_checker=False, local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, prompts: list[str], seeds: list[int], batch: int = 27, **settings) -> np.ndarray:
    """One picture per (prompt, seed): ``uint8 [n, 64, 64, 3]``, each seeded on its own."""
    settings = {**DEFAULTS, "height": 64, "width": 64, **settings}
    out = []
    for i in range(0, len(prompts), batch):
        gens = [torch.Generator().manual_seed(s) for s in seeds[i : i + batch]]
        images = pipe(prompts[i : i + batch], generator=gens, output_type="np", **settings).images
        out.append((images * 255).round().astype(np.uint8))
    return np.concatenate(out)


def contact_sheet(
    images: np.ndarray, rows: list[str], cols: list[str], scale: int = 1
) -> Image.Image:
    """A labelled grid: ``images`` in row-major order, ``len(rows) x len(cols)`` pictures."""
    s = 64 * scale
    left, top, pad = 52, 26, 2
    sheet = Image.new(
        "RGB", (left + len(cols) * (s + pad), top + len(rows) * (s + pad)), (255, 255, 255)
    )
    d = ImageDraw.Draw(sheet)
    for j, name in enumerate(cols):
        for k, part in enumerate(name.split("\n")):
            d.text((left + j * (s + pad) + 2, 1 + 11 * k), part, fill=(0, 0, 0))
    for i, name in enumerate(rows):
        d.text((2, top + i * (s + pad) + s // 2 - 5), name, fill=(0, 0, 0))
        for j in range(len(cols)):
            im = Image.fromarray(images[i * len(cols) + j])
            if scale != 1:
                im = im.resize((s, s), Image.LANCZOS)
            sheet.paste(im, (left + j * (s + pad), top + i * (s + pad)))
    return sheet


def sequence_check(pipe, model: Classifier, loops: int = 12, switch: int = 6, denoise: float = 0.6):
    """Step 4: "0: a red circle / 6: a blue square", each loop img2img of the last at ``denoise``.

    diffusers' ``strength`` stands in for ComfyUI's denoise here (it runs fewer steps, same
    noise level); the engine's own check belongs to its tests.
    """
    from diffusers import StableDiffusionImg2ImgPipeline

    img2img = StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False)
    img2img.set_progress_bar_config(disable=True)
    frames = generate(pipe, ["a red circle"], [0])
    for i in range(1, loops):
        prompt = "a red circle" if i < switch else "a blue square"
        init = Image.fromarray(frames[-1])
        out = img2img(
            prompt,
            image=init,
            strength=denoise,
            generator=torch.Generator().manual_seed(i),
            output_type="np",
            **DEFAULTS,
        ).images
        frames = np.concatenate([frames, (out * 255).round().astype(np.uint8)])
    pred = classify(model, frames)
    return frames, [
        (COLORS[c], SHAPES[s]) for c, s in zip(pred["color"], pred["shape"], strict=True)
    ]


#: The few-step grid of the toy model's docs: model steps per loop, and cfg.
FEW_STEPS = (4, 8, 20)
FEW_STEPS_CFGS = (1.0, 2.0, 4.0, 7.0, 8.0)


def few_steps_table(
    pipe,
    model: Classifier,
    *,
    steps: tuple[int, ...] = FEW_STEPS,
    cfgs: tuple[float, ...] = FEW_STEPS_CFGS,
    colors: tuple[str, ...] = COLORS[:4],
    shapes: tuple[str, ...] = SHAPES,
    seeds: tuple[int, ...] = (0, 1),
    loops: int = 4,
    denoise_seq: float = 0.5,
    log=print,
) -> dict:
    """Color adherence of seqwidgets' engine on ``pipe`` over a steps x cfg grid.

    For each (steps, cfg), every plain prompt "a {color} {shape}" and seed runs one sequence of
    ``loops`` loops ("0: a red circle", loop 0 from the empty latent, the others at
    ``denoise_seq``, Euler, normal schedule), and ``model`` classifies each loop's VAE decode.

    Returns ``{"settings": {...}, "rows": [{"steps", "cfg", "loop0": [right, total],
    "later": [right, total]}, ...]}``, "later" counting loops 1 to ``loops - 1``; the input of
    `few_steps_markdown`.
    """
    from seqwidgets.decode import decode_latents
    from seqwidgets.engine import SequenceSampler
    from seqwidgets.params import SequenceParams

    sampler = SequenceSampler(pipe)
    rows = []
    t0 = time.time()
    for n in steps:
        for cfg in cfgs:
            latents, asked = [], []
            for color in colors:
                for shape in shapes:
                    for seed in seeds:
                        params = SequenceParams(
                            seed=seed,
                            steps=n,
                            cfg=cfg,
                            sampler_name="euler",
                            scheduler="normal",
                            sequence_loop_count=loops,
                            positive_seq=f"0: {caption(color, shape)}",
                            negative_seq="",
                            denoise_seq=denoise_seq,
                            width=64,
                            height=64,
                        )
                        latents += [frame.latent for frame in sampler.frames(params)]
                        asked += [COLORS.index(color)] * loops
            images = decode_latents(pipe.vae, torch.stack(latents))
            pred = classify(model, np.stack([np.asarray(im.convert("RGB")) for im in images]))
            right = (pred["color"] == np.array(asked)).reshape(-1, loops)
            row = {
                "steps": n,
                "cfg": cfg,
                "loop0": [int(right[:, 0].sum()), len(right)],
                "later": [int(right[:, 1:].sum()), right[:, 1:].size],
            }
            rows.append(row)
            log(
                f"few steps {n} cfg {cfg:g}: loop 0 {row['loop0']}, loops 1-{loops - 1} {row['later']}"
            )
    return {
        "settings": {
            "colors": list(colors),
            "shapes": list(shapes),
            "seeds": list(seeds),
            "loops": loops,
            "denoise_seq": denoise_seq,
            "sampler_name": "euler",
            "scheduler": "normal",
            "threads": torch.get_num_threads(),
            "seconds": round(time.time() - t0, 1),
        },
        "rows": rows,
    }


def few_steps_markdown(result: dict) -> str:
    """The Markdown table of `few_steps_table`'s result: one row per steps, one column per cfg.

    A cell reads "loop 0 right / total, loops 1+ right / total"; cells where every loop got the
    asked color are bold.

    Example:
        >>> result = {"settings": {"loops": 4}, "rows": [
        ...     {"steps": 4, "cfg": 1.0, "loop0": [2, 2], "later": [6, 6]},
        ...     {"steps": 4, "cfg": 8.0, "loop0": [1, 2], "later": [3, 6]}]}
        >>> print(few_steps_markdown(result))
        | steps | cfg 1 | cfg 8 |
        |---|---|---|
        | 4 | **2/2, 6/6** | 1/2, 3/6 |
    """
    cfgs = sorted({row["cfg"] for row in result["rows"]})
    cells = {(row["steps"], row["cfg"]): row for row in result["rows"]}
    lines = [
        "| steps | " + " | ".join(f"cfg {c:g}" for c in cfgs) + " |",
        "|---" * (len(cfgs) + 1) + "|",
    ]
    for n in sorted({row["steps"] for row in result["rows"]}):
        texts = []
        for c in cfgs:
            row = cells.get((n, c))
            if row is None:
                texts.append("")
                continue
            text = "{}/{}, {}/{}".format(*row["loop0"], *row["later"])
            perfect = row["loop0"][0] == row["loop0"][1] and row["later"][0] == row["later"][1]
            texts.append(f"**{text}**" if perfect else text)
        lines.append(f"| {n} | " + " | ".join(texts) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m seqwidgets.models.toy.evaluate``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--model", default=str(TOY_MODEL_PATH), help="pipeline folder (default: shipped)"
    )
    p.add_argument("--seeds", type=int, default=4, help="pictures per prompt")
    p.add_argument("--steps", type=int, default=DEFAULTS["num_inference_steps"])
    p.add_argument("--cfg", type=float, default=DEFAULTS["guidance_scale"])
    p.add_argument(
        "--scheduler",
        default=None,
        help="a diffusers scheduler class name, e.g. EulerDiscreteScheduler",
    )
    p.add_argument(
        "--classifier",
        default=None,
        help="classifier weights (.pt state dict): loaded if it exists, else trained and saved there",
    )
    p.add_argument("--classifier-steps", type=int, default=1200)
    p.add_argument("--sheet", default=None, help="contact sheet PNG to write")
    p.add_argument("--json", default=None, help="results JSON to write")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--few-steps",
        default=None,
        metavar="JSON",
        help="score the steps x cfg grid of few-step settings instead, and write it to JSON",
    )
    return p


def load_or_train_classifier(path: str | None, steps: int, log=print) -> Classifier:
    """Step 1: the classifier from ``path`` if it exists, else trained (and saved to ``path``)."""
    if path and Path(path).exists():
        model = Classifier()
        model.load_state_dict(torch.load(path, weights_only=True))
        model.eval()
        return model
    model = train_classifier(steps, log=log)
    if path:
        torch.save(model.state_dict(), path)
    return model


def score_full_prompts(pipe, model: Classifier, seeds: int, settings: dict, log=print):
    """Steps 2-3 for every (color, shape, position), "a red circle on the left".

    Returns ``(results, images, combos, seconds_per_image)``: accuracy per head, the pictures
    (``seeds`` per combination, in order) and the combinations.
    """
    combos = [(c, s, q) for c in COLORS for s in SHAPES for q in POSITIONS]
    prompts = [caption(c, s, q) for c, s, q in combos for _ in range(seeds)]
    t = time.time()
    images = generate(pipe, prompts, [k for _ in combos for k in range(seeds)], **settings)
    per_image = (time.time() - t) / len(prompts)
    pred = classify(model, images)
    want = {
        k: np.array([HEADS[k].index(v[j]) for v in combos for _ in range(seeds)])
        for j, k in enumerate(("color", "shape", "position"))
    }
    results = {k: float((pred[k] == want[k]).mean()) for k in want}
    log(f"full prompts ({len(prompts)} pictures, {per_image:.3f} s each): {results}")
    return results, images, combos, per_image


def score_plain_prompts(pipe, model: Classifier, seeds: int, settings: dict) -> dict[str, float]:
    """Steps 2-3 for every plain (color, shape), "a red circle": color and shape accuracy."""
    plain = [(c, s) for c in COLORS for s in SHAPES]
    prompts = [caption(c, s) for c, s in plain for _ in range(seeds)]
    images = generate(pipe, prompts, [100 + k for _ in plain for k in range(seeds)], **settings)
    pred = classify(model, images)
    colors = np.array([COLORS.index(c) for c, _ in plain for _ in range(seeds)])
    shapes = np.array([SHAPES.index(s) for _, s in plain for _ in range(seeds)])
    return {
        "plain_color": float((pred["color"] == colors).mean()),
        "plain_shape": float((pred["shape"] == shapes).mean()),
    }


def write_sheet(path: str, full: np.ndarray, combos: list, seeds: int, frames: np.ndarray) -> None:
    """Step 5: the grid of first-seed pictures, with the quickstart sequence under it."""
    first = full.reshape(len(combos), seeds, 64, 64, 3)[:, 0]
    cols = [f"{s}\n{q}" for s in SHAPES for q in POSITIONS]
    grid = contact_sheet(first, list(COLORS), cols)
    seq = contact_sheet(frames, ["seq"], [str(i) for i in range(len(frames))])
    # the quickstart sequence under the grid: loops 0-5 "a red circle", 6-11 "a blue square"
    sheet = Image.new("RGB", (max(grid.width, seq.width), grid.height + seq.height + 8), "white")
    sheet.paste(grid, (0, 0))
    sheet.paste(seq, (0, grid.height + 8))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()

    def log(msg):
        print(f"[{time.time() - t0:6.1f}s] {msg}", flush=True)

    # 1. the classifier
    model = load_or_train_classifier(args.classifier, args.classifier_steps, log=log)
    if args.few_steps:
        result = few_steps_table(load_pipeline(args.model), model, log=log)
        Path(args.few_steps).write_text(json.dumps(result, indent=1) + "\n")
        log(f"wrote {args.few_steps}\n{few_steps_markdown(result)}")
        return result
    pipe = load_pipeline(args.model)
    if args.scheduler:
        import diffusers

        pipe.scheduler = getattr(diffusers, args.scheduler).from_config(pipe.scheduler.config)
    settings = {"num_inference_steps": args.steps, "guidance_scale": args.cfg}

    # 2-3. the prompts' pictures, scored
    results, full, combos, per_image = score_full_prompts(pipe, model, args.seeds, settings, log)
    results.update(score_plain_prompts(pipe, model, args.seeds, settings))
    log(f"plain prompts: color {results['plain_color']:.3f} shape {results['plain_shape']:.3f}")

    # 4. the quickstart sequence
    frames, calls = sequence_check(pipe, model)
    results["sequence_last_frames"] = [" ".join(c) for c in calls[-3:]]
    log(f"sequence red circle -> blue square (denoise 0.6): {calls}")

    for k in ("color", "shape", "position"):
        log(f"{k:>8} accuracy {results[k]:.1%}")
    results["settings"] = {
        **settings,
        "scheduler": type(pipe.scheduler).__name__,
        "seeds": args.seeds,
        "seconds_per_image": round(per_image, 3),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    # 5. the contact sheet
    if args.sheet:
        write_sheet(args.sheet, full, combos, args.seeds, frames)
        log(f"wrote {args.sheet}")
    return results


if __name__ == "__main__":
    main()
