"""A VAE decoding in a process of its own, so that a CPU sampler never waits for it.

On a CPU with a core to spare, the studio decodes each new frame beside the sampling. On a thread
the decode's convolutions do run on the other core, but between two of its small operations the
thread takes Python's lock back, and a sampler of small operations (the toy model: hundreds a
step) waits for it each time: a decode on a thread cost the toy model's engine 1 to 3% of its
time on a 2-core machine, the same decode in another process 0.4% (bench_interaction's notes in
docs/performance.md). In a process nothing is shared.

The process holds a copy of the VAE, taken when it starts (weights changed in place later are
not seen; a VAE moved to another device or dtype since is decoded here, and the studio decodes
here when the pipeline is given another VAE), and runs the same
`decode_latents` with as many torch threads as the sampler, so its pixels are the in-process
decode's, bit for bit (tested).
It starts in the background; until it is ready, and for good once it has failed (a VAE that
cannot be copied, a process that died or stopped answering, a platform whose pipes it cannot
use: it is written for Linux and macOS), `DecodeProcess.decode` decodes in the calling
process, so a caller never sees the difference but in time.

Example:
    >>> import torch
    >>> from seqwidgets.testing import tiny_pipeline
    >>> vae = tiny_pipeline().vae
    >>> helper = DecodeProcess(vae)  # nothing started yet: decodes here
    >>> helper.decode(torch.zeros(4, 8, 8)).size
    (64, 64)
    >>> helper.state
    'not started'
    >>> helper.close()
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .decode import decode_latents

__all__ = ["DecodeProcess", "vae_bytes"]

#: VAEs above this many bytes of weights are not copied into a helper (the copy doubles them).
MAX_VAE_BYTES = 1 << 30


def vae_bytes(vae) -> int:
    """Bytes of the VAE's weights (parameters and buffers): what a helper process copies."""
    tensors = [*vae.parameters(), *vae.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


class DecodeProcess:
    """Decodes latents with a copy of ``vae`` in a helper process, or here until it is ready.

    Args:
        vae: the pipeline's VAE, on the CPU.
        threads (`int`, *optional*): torch threads in the helper; default the caller's
            (`torch.get_num_threads()`), which keeps the pixels equal.

    Attributes:
        state (`str`): ``"not started"``, ``"starting"``, ``"ready"``, ``"closed"`` or
            ``"failed: <why>"``.
        decoded_here (`int`), decoded_there (`int`): decodes done in this process and in the
            helper.
    """

    #: Seconds at least that a decode request waits for the helper's answer.
    patience = 60.0

    def __init__(self, vae, *, threads: int | None = None):
        self.vae = vae
        self.threads = threads if threads is not None else torch.get_num_threads()
        self.state = "not started"
        self.decoded_here = 0
        self.decoded_there = 0
        self._pipes: tuple[Connection, Connection] | None = None  # (to it, from it)
        self._process: subprocess.Popen | None = None
        self._slowest = 0.0  # seconds, the helper's slowest answer
        self._copied = _placement(vae)  # what the copy is: a VAE moved since decodes here
        self._lock = threading.Lock()  # one request at a time on the pipe
        self._settled = threading.Event()  # the start is over: ready, or failed

    def start(self) -> None:
        """Start the helper in the background (once); `decode` uses it when it is ready."""
        with self._lock:
            if self.state != "not started":
                return
            self.state = "starting"
        threading.Thread(target=self._start, name="seqwidgets-decoder-start", daemon=True).start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the helper is ready or has failed; return whether it is ready."""
        if self.state == "starting":
            self._settled.wait(timeout)
        return self.state == "ready"

    def decode(self, latent: torch.Tensor, vae=None) -> Image.Image:
        """Decode one latent ``[C, h, w]`` (diffusers' scaling) to an RGB image with ``vae``
        (default: the one copied): in the helper when it is ready and ``vae`` is still what it
        copied (the same object, on the same device, in the same dtype), else here."""
        vae = self.vae if vae is None else vae
        if self.state == "ready" and vae is self.vae and _placement(vae) == self._copied:
            pixels = self._ask(latent)
            if pixels is not None:
                self.decoded_there += 1
                return Image.fromarray(pixels)
        self.decoded_here += 1
        return decode_latents(vae, latent)[0]

    def close(self) -> None:
        """Stop the helper. (It also ends with this process: its requests' pipe closes.)"""
        with self._lock:
            if not self.state.startswith("failed"):
                self.state = "closed"
            self._end(patience=5.0)

    # -- the parent's side -----------------------------------------------------------------

    def _start(self) -> None:
        why = None
        try:
            if vae_bytes(self.vae) > MAX_VAE_BYTES:
                raise ValueError(f"the VAE is over {MAX_VAE_BYTES >> 20} MiB: not copied")
            blob = pickle.dumps(self.vae)  # a copy of the weights, not shared memory
            # A fresh interpreter running this module (not multiprocessing's spawn, which runs
            # the caller's script again where it has no ``if __name__ == "__main__"``). Its
            # output is the pipe back; what its imports print is not the user's business.
            process = subprocess.Popen(
                [sys.executable, "-m", __name__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=_child_environment(),
            )
            pipes = (
                Connection(os.dup(process.stdin.fileno()), readable=False),
                Connection(os.dup(process.stdout.fileno()), writable=False),
            )
            process.stdin.close()
            process.stdout.close()
            with self._lock:  # from here on `close` and `_give_up` end them
                self._pipes, self._process = pipes, process
                if self.state != "starting":  # closed meanwhile
                    self._end()
                    return
            pipes[0].send((blob, self.threads))
            del blob
            reply = pipes[1].recv()  # "ready" or ("error", why); then ("image", pixels)
            why = None if reply == "ready" else reply[1]
        except Exception as exc:  # closed meanwhile (its pipes closed), or a failed start
            why = f"{type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                if self.state == "starting":
                    if why is None:
                        self.state = "ready"
                    else:
                        self._give_up(why)
            self._settled.set()

    def _ask(self, latent: torch.Tensor) -> np.ndarray | None:
        array = latent.detach().to("cpu", torch.float32).numpy()  # exact for f32, bf16, f16
        with self._lock:
            if self._pipes is None:
                return None
            to_child, from_child = self._pipes
            # A decode may take long; a dead helper is noticed within a second, and one that
            # stopped answering (20 times its slowest decode, at least `patience`) is given up.
            patience, asked = max(self.patience, 20 * self._slowest), time.monotonic()
            try:
                to_child.send(array)
                while not from_child.poll(1.0):
                    if self._process.poll() is not None:
                        raise EOFError("it ended")
                    if time.monotonic() - asked > patience:
                        raise TimeoutError(f"no answer in {patience:.0f} s")
                kind, value = from_child.recv()
            except (EOFError, OSError) as exc:  # decode here from now on
                self._give_up(f"the decoding process failed ({type(exc).__name__}: {exc})")
                return None
            self._slowest = max(self._slowest, time.monotonic() - asked)
            if kind == "error":  # decoded here instead, which says what is wrong if it is
                self._give_up(value)
                return None
        return value

    def _give_up(self, why: str) -> None:  # with the lock held
        self.state = f"failed: {why}"
        self._end()

    def _end(self, patience: float = 0.0) -> None:  # with the lock held
        """Close the pipes (the helper stops at the end of its requests), wait ``patience``
        seconds for it to go, then kill it."""
        for pipe in self._pipes or ():
            pipe.close()
        if self._process is not None:
            try:
                self._process.wait(patience)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._pipes = self._process = None


def _placement(vae) -> tuple[torch.device, torch.dtype] | None:
    """Where and in what dtype ``vae`` computes (its first weight's)."""
    weight = next(vae.parameters(), None)
    return None if weight is None else (weight.device, weight.dtype)


# -- the helper's side ---------------------------------------------------------------------------


def _child_environment() -> dict[str, str]:
    """The caller's environment, with this package importable even when it was put on
    ``sys.path`` by hand rather than installed."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _serve() -> None:
    """The helper: load the VAE copy, say "ready", then decode each latent until its input ends.
    Requests come on standard input, replies go out on what was standard output (anything else
    printed there would corrupt them: it goes nowhere)."""
    from_parent = Connection(os.dup(0), writable=False)
    to_parent = Connection(os.dup(1), readable=False)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        blob, threads = from_parent.recv()
        torch.set_num_threads(threads)
        torch.set_grad_enabled(False)
        vae = pickle.loads(blob)
        del blob
    except Exception as exc:
        to_parent.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    to_parent.send("ready")
    while True:
        try:
            array = from_parent.recv()
        except EOFError:  # the studio closed it, or its process ended
            return
        try:
            image = decode_latents(vae, torch.from_numpy(array))[0]
            to_parent.send(("image", np.asarray(image)))
        except Exception as exc:
            to_parent.send(("error", f"{type(exc).__name__}: {exc}"))


if __name__ == "__main__":
    if sys.stdin.isatty() or len(sys.argv) > 1:  # run by hand (``--help``): say what it is
        print(
            "seqwidgets.decode_process is the studio's VAE decoding helper: a Studio starts it "
            "and talks to it through its standard input and output; it is not run by hand.",
            file=sys.stderr,
        )
        sys.exit(2)
    _serve()
