"""Where a pipeline runs: the default device, and how many CPU threads torch uses there.

torch starts one OpenMP thread per core. Each model call then waits for its slowest thread, so
when anything else holds a core (a browser, a compiler, another notebook, a shared CI runner) a
call can take ten to fifty times longer than with fewer threads. ``benchmarks/bench_threads.py``
measured this on a 2-core machine shared with other jobs (load average 6): the toy model ran
4.9 loops/s on 1 thread and 0.09 loops/s on 2; with one more busy-loop process, 1.55 against
0.21. (Four threads need four cores: not measured there.)

So on the CPU seqwidgets uses half the cores (at least one) unless told otherwise, the first time
a pipeline is loaded for the CPU. The knob, strongest first:

1. ``seqwidgets render --threads N`` or ``apply_cpu_threads(N)``;
2. the environment variable ``SEQWIDGETS_CPU_THREADS=N``;
3. ``OMP_NUM_THREADS`` set, or ``torch.set_num_threads`` called before the first load: left as is;
4. otherwise ``max(1, cores // 2)``.

Example:
    >>> cpu_threads(3)
    3
    >>> cpu_threads(None, environ={"SEQWIDGETS_CPU_THREADS": "2"})
    2
    >>> cpu_threads(None, environ={}, cores=8)
    4
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

ENV_VAR = "SEQWIDGETS_CPU_THREADS"

# Set once a thread count has been applied, so a later load never overrides the user's choice.
_applied: int | None = None


def cpu_threads(
    requested: int | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cores: int | None = None,
) -> int:
    """The number of CPU threads to use: ``requested``, else ``$SEQWIDGETS_CPU_THREADS``, else
    half the cores (at least 1).

    Raises:
        ValueError: a requested or configured count that is not a whole number >= 1.
    """
    environ = os.environ if environ is None else environ
    if requested is None and environ.get(ENV_VAR, "").strip():
        text = environ[ENV_VAR].strip()
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"{ENV_VAR}: {text!r} is not a whole number of threads >= 1")
        return int(text)
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"threads: {requested!r} is not a whole number >= 1")
        return requested
    cores = cores if cores is not None else (os.cpu_count() or 1)
    return max(1, cores // 2)


def apply_cpu_threads(requested: int | None = None) -> int:
    """Set torch's CPU thread count to `cpu_threads(requested)` and return it.

    Example:
        >>> import torch
        >>> before = torch.get_num_threads()
        >>> apply_cpu_threads(1)
        1
        >>> _ = apply_cpu_threads(before)
    """
    global _applied
    import torch

    threads = cpu_threads(requested)
    torch.set_num_threads(threads)
    _applied = threads
    return threads


def default_cpu_threads() -> int | None:
    """Apply the default thread count the first time a pipeline loads for the CPU.

    Does nothing (returns ``None``) when a count was applied already, or when the user chose one
    another way: ``OMP_NUM_THREADS`` set without ``SEQWIDGETS_CPU_THREADS``, or
    ``torch.set_num_threads`` called with a count other than torch's own default.
    """
    import torch

    if _applied is not None:
        return None
    if not os.environ.get(ENV_VAR, "").strip():
        if os.environ.get("OMP_NUM_THREADS"):
            return None
        if torch.get_num_threads() != _torch_default_threads():
            return None  # torch.set_num_threads was called: that is the user's choice
    return apply_cpu_threads()


def _torch_default_threads() -> int:
    # torch starts with one thread per core it may run on.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def available_devices() -> list[str]:
    """The devices a pipeline can run on here: ``cpu``, then ``cuda:0``... and ``mps`` if any.

    Example:
        >>> available_devices()[0]
        'cpu'
    """
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def check_device(device: str | torch.device, name: str = "device") -> torch.device:
    """``device`` as a `torch.device` if a pipeline can run on it here, else a `ValueError`
    in one line naming ``name`` and the devices there are (torch's own error is a traceback
    from deep inside the first tensor moved there, after the model has loaded).

    Example:
        >>> check_device("cpu")
        device(type='cpu')
        >>> check_device("tpu", "--device")
        Traceback (most recent call last):
        ...
        ValueError: --device 'tpu': not a device torch knows; available here: cpu...
    """
    import torch

    available = available_devices()
    where = f"available here: {', '.join(available)}"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name} {device!r}: not a device torch knows; {where}") from None
    if parsed.type == "cpu":
        return parsed
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if not torch.backends.cuda.is_built() else "no GPU found"
            raise ValueError(f"{name} {device!r}: this torch cannot use CUDA ({build}); {where}")
        if (parsed.index or 0) >= torch.cuda.device_count():
            raise ValueError(f"{name} {device!r}: there is no such CUDA device; {where}")
        return parsed
    if parsed.type == "mps" and "mps" in available:
        return parsed
    raise ValueError(f"{name} {device!r}: not available on this machine; {where}")


def default_device() -> torch.device:
    """CUDA when there is one, else Apple's MPS, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
