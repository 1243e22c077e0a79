"""Quiet model loading: the loaders' chatter held back, their errors kept.

Below both `seqwidgets.models` (``load_pipeline``) and `seqwidgets.testing` (the tiny random
pipelines), which each load through it.

Example:
    >>> with quiet_loading():
    ...     from diffusers import UNet2DConditionModel
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager

#: Loggers of the optional quantization packages that report, as warnings, each GPU-only kernel
#: a CPU build cannot load (torchao, bitsandbytes) and torch's notices about their types.
QUIET_LOGGERS = ("torchao", "bitsandbytes", "torch.utils._pytree")


@contextmanager
def quiet_loggers(names=QUIET_LOGGERS):
    """Raise the given loggers to ERROR for the duration (their levels restored afterwards).

    Example:
        >>> with quiet_loggers(("torchao",)):
        ...     logging.getLogger("torchao").isEnabledFor(logging.WARNING)
        False
    """
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextmanager
def quiet_loading():
    """Hold back the loaders' chatter while a pipeline loads: progress bars, notices about
    optional packages (torchvision, accelerate) and a deprecated argument name. Errors still
    surface; only the libraries' log level is lowered, and restored afterwards."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    levels = (diffusers_logging.get_verbosity(), transformers_logging.get_verbosity())
    bars = (
        diffusers_logging.is_progress_bar_enabled(),
        transformers_logging.is_progress_bar_enabled(),
    )
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings(), quiet_loggers():
            warnings.filterwarnings("ignore", message=".*torch_dtype.* is deprecated")
            # diffusers still passes this to huggingface_hub, which ignores it
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.* is deprecated")
            yield
    finally:
        diffusers_logging.set_verbosity(levels[0])
        transformers_logging.set_verbosity(levels[1])
        if bars[0]:
            diffusers_logging.enable_progress_bar()
        if bars[1]:
            transformers_logging.enable_progress_bar()
