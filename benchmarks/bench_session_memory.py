"""Host RAM of a Session holding 1,000 frames of SD-1.5 size (4x64x64 latents), against 300 MB.

    python benchmarks/bench_session_memory.py [--frames 1000] [--dtype float32]

No model runs: the frames are built directly with random latents (what the engine stores: one
``[4, 64, 64]`` CPU tensor in the pipeline's dtype per loop, plus the loop's sigma slice, shared
by the loops with the same denoise) and attached to a session as a tree: one root run of 40%
of the frames and three branches forked from it. The session's pipeline is the tiny random one
(it only supplies the latent channel count); its own memory is part of the baseline.

Measured, each as a delta from the baseline after imports and pipeline construction:

1. ``session``: the tree of frames. RSS delta, the bytes of the latent tensors, and the Python
   objects around them (tracemalloc; torch's tensor storage is not traced by it);
2. ``session + full image caches``: the decoded-image LRU filled to its bound with 512x512 RGB
   images (SD 1.5's decoded size) and the thumbnail LRU with 128x128 ones. The images are made
   synthetically (decoding 1,000 frames with a VAE would measure the VAE, not the session);
3. ``save`` / ``load``: the single-file save's size and time, and the RSS of a second session
   loaded from it.

Prints a table and writes ``benchmarks/results/session_memory.json``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import seqwidgets as sw
from seqwidgets.engine import Frame
from seqwidgets.params import SequenceParams
from seqwidgets.schedules import loop_sigmas
from seqwidgets.session import Branch, Session

TARGET_MB = 300
MB = 1e6


def rss() -> int:
    """Resident set size of this process in bytes (Linux /proc, else psutil, else 0)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        return 0


def _malloc_trim() -> bool:
    """Hand freed heap pages back to the OS (glibc), so RSS shows live memory; False elsewhere."""
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def settle(trim: bool = True) -> int:
    """RSS after a garbage collection (and a malloc_trim unless ``trim`` is False)."""
    gc.collect()
    if trim:
        _malloc_trim()
    return rss()


def build_tree(session: Session, n_frames: int, dtype: torch.dtype) -> None:
    """Attach ``n_frames`` frames to ``session``: a root of 40% and three branches of 20%."""
    root_count = max(1, round(n_frames * 0.4))
    rest = n_frames - root_count
    sizes = [rest // 3 + (1 if i < rest % 3 else 0) for i in range(3)]
    generator = torch.Generator().manual_seed(0)
    sampling = session.sampler.model_sampling

    def make_frames(params: SequenceParams, start: int, count: int) -> dict[int, Frame]:
        plans = sw.plan_sequence(params)
        sigmas = {
            d: loop_sigmas(sampling, params.scheduler, params.sampler_name, params.steps, d)
            for d in {params.denoise_start, params.denoise_seq}
        }
        frames = {}
        for i in range(start, start + count):
            plan = plans[i]
            frames[i] = Frame(
                index=i,
                seed=plan.seed,
                latent=torch.randn(4, 64, 64, generator=generator).to(dtype),
                denoise=plan.denoise,
                positive=plan.positive,
                negative=plan.negative,
                sigmas=sigmas[plan.denoise],
                timings={"unsample": 0.0, "sample": 0.0, "total": 0.0},
            )
        return frames

    params = SequenceParams(
        steps=20,
        sequence_loop_count=root_count,
        positive_seq="0: a red circle\n100: a blue square\n250: a green triangle",
        width=512,
        height=512,
    )
    root = Branch(1, "run 1", params, None, 0, make_frames(params, 0, root_count))
    session._branches.append(root)  # attached directly: no model runs in this benchmark
    for n, size in enumerate(sizes):
        fork = root_count // (n + 2)
        child_params = params.replace(seed=100 + n, sequence_loop_count=fork + size)
        frames = make_frames(child_params, fork, size)
        session._branches.append(Branch(n + 2, f"branch {n + 2}", child_params, root, fork, frames))
    session._next_id = len(session._branches) + 1


def fill_caches(session: Session) -> dict[str, int]:
    """Fill the image LRU with 512x512 RGB images and the thumbnail LRU with 128x128 ones."""
    rng = np.random.default_rng(0)
    keys = [(b.id, i) for b in session.branches for i in b.own_indices]
    for key in keys:
        pixels = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
        session._images.put(key, Image.fromarray(pixels))
        session._thumbnails.put((*key, 128), Image.fromarray(pixels[::4, ::4].copy()))
    # Pillow stores an RGB image as 4 bytes per pixel; ImageCache counts 3 (its bound's unit).
    held = [
        session._images.get(k, _missing)
        for k in session._images.keys()  # noqa: SIM118
    ] + [session._thumbnails.get(k, _missing) for k in session._thumbnails.keys()]  # noqa: SIM118
    return {
        "pillow_bytes": sum(image.width * image.height * 4 for image in held),
        "images": len(session._images),
        "image_bytes": session._images.nbytes,
        "thumbnails": len(session._thumbnails),
        "thumbnail_bytes": session._thumbnails.nbytes,
    }


def _missing():
    raise KeyError("evicted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.set_num_threads(2)

    pipe = sw.testing.tiny_pipeline()
    session = Session(pipe)
    baseline = settle()

    tracemalloc.start()
    t0 = time.perf_counter()
    build_tree(session, args.frames, dtype)
    build_s = time.perf_counter() - t0
    python_objects = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    after_tree = settle()
    frames = [f for b in session.branches for f in b.frames.values()]
    latent_bytes = sum(f.latent.untyped_storage().nbytes() for f in frames)
    sigma_bytes = sum({id(f.sigmas): f.sigmas.untyped_storage().nbytes() for f in frames}.values())

    caches = fill_caches(session)
    after_caches_untrimmed = settle(trim=False)
    after_caches = settle()

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "session.safetensors"
        t0 = time.perf_counter()
        session.save(path)
        save_s = time.perf_counter() - t0
        file_bytes = path.stat().st_size
        before_load = settle()
        t0 = time.perf_counter()
        loaded = Session.load(path, pipe)
        load_s = time.perf_counter() - t0
        after_load = settle()
        assert sum(len(b.frames) for b in loaded.branches) == len(frames)

    rows = [
        ("frames", f"{len(frames)}", ""),
        ("latent dtype / shape", f"{args.dtype} [4, 64, 64]", ""),
        ("latent tensor bytes", f"{latent_bytes / MB:.1f} MB", ""),
        ("sigma tensors (shared)", f"{sigma_bytes / 1e3:.1f} kB", ""),
        ("python objects (tracemalloc)", f"{python_objects / MB:.1f} MB", ""),
        ("RSS delta: session", f"{(after_tree - baseline) / MB:.1f} MB", f"<= {TARGET_MB} MB"),
        (
            "image cache (512x512 RGB)",
            f"{caches['images']} images, {caches['image_bytes'] / MB:.1f} MB",
            "",
        ),
        (
            "thumbnail cache (128x128)",
            f"{caches['thumbnails']} thumbs, {caches['thumbnail_bytes'] / MB:.1f} MB",
            "",
        ),
        (
            "  as Pillow holds them (RGB: 4 B/px)",
            f"{caches['pillow_bytes'] / MB:.1f} MB",
            "",
        ),
        (
            "RSS delta: session + full caches",
            f"{(after_caches - baseline) / MB:.1f} MB",
            f"<= {TARGET_MB} MB",
        ),
        (
            "  the same before malloc_trim",
            f"{(after_caches_untrimmed - baseline) / MB:.1f} MB",
            "(freed heap the allocator kept)",
        ),
        ("save (one .safetensors file)", f"{file_bytes / MB:.1f} MB in {save_s:.2f} s", ""),
        ("load", f"{load_s:.2f} s, RSS +{(after_load - before_load) / MB:.1f} MB", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"Session memory, {len(frames)} frames of SD-1.5 latent size (target {TARGET_MB} MB)")
    for name, value, target in rows:
        print(f"  {name:<{width}}  {value:<32} {target}")
    total = (after_caches - baseline) / MB
    verdict = "PASS" if total <= TARGET_MB else "FAIL"
    print(f"  {verdict}: {total:.1f} MB with every cache full, target {TARGET_MB} MB")

    result = {
        "frames": len(frames),
        "dtype": args.dtype,
        "latent_shape": [4, 64, 64],
        "latent_bytes": latent_bytes,
        "sigma_bytes": sigma_bytes,
        "python_object_bytes_tracemalloc": python_objects,
        "rss_baseline_bytes": baseline,
        "rss_delta_session_bytes": after_tree - baseline,
        "rss_delta_session_and_caches_bytes": after_caches - baseline,
        "rss_delta_session_and_caches_before_malloc_trim_bytes": after_caches_untrimmed - baseline,
        "caches": caches,
        "build_seconds": build_s,
        "save_seconds": save_s,
        "save_file_bytes": file_bytes,
        "load_seconds": load_s,
        "rss_delta_load_bytes": after_load - before_load,
        "target_mb": TARGET_MB,
        "within_target": total <= TARGET_MB,
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
        },
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "session_memory.json"
    target.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
