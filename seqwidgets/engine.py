"""SequenceSampler: the KSampler Sequence loop over a diffusers pipeline, one frame at a time.

Each loop of a run, top to bottom (see ``SequenceSampler.frames``):

1. the plan gives the loop's seed, prompt chains, denoise and sigma slice (``plan.py``);
2. the prompt chains become conditionings (cached: one text-encoder call per distinct prompt);
3. the input latent is the empty/init latent for loop 0, the previous loop's result after;
4. noise is ``torch.randn`` from a CPU generator seeded with the loop's seed (ComfyUI's
   convention, identical on every device), mixed in by the model sampling (``latent + sigma *
   noise`` for SD, ``sigma * noise + (1 - sigma) * latent`` for flow models); or, with
   ``unsample_latents``, the input is first run backwards along the ODE to that noise level;
5. the sampler walks the sigma slice, one batched CFG network call (UNet or transformer) per
   step;
6. with ``use_latent_interpolation``, the result is mixed with the previous loop's result;
7. the frame is moved to the CPU, checked for NaN/Inf and yielded at once.

Example:
    >>> import seqwidgets as sw
    >>> sampler = sw.SequenceSampler(sw.testing.tiny_pipeline())
    >>> params = sw.SequenceParams(positive_seq="0: a red circle", steps=2, sequence_loop_count=3)
    >>> [frame.seed for frame in sampler.frames(params)]
    [1, 2, 1]
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator

import torch

from . import samplers
from .choices import SAMPLER_SPECS_BY_NAME
from .coherence import ColorCoherence
from .conditioning import PromptEncoder
from .denoiser import CFGDenoiser
from .device import check_run_memory, module_device
from .families import detect_family
from .frames import Frame
from .interp import LATENT_INTERPOLATIONS
from .params import SequenceParams
from .plan import LoopPlan, plan_sequence

StepCallback = Callable[[int, int, float, torch.Tensor], None]


def _mark_loop(error: BaseException, index: int) -> None:
    """Record on ``error`` the loop it was raised in: ``error.loop``, and a traceback note."""
    if getattr(error, "loop", None) is not None:
        return
    try:
        error.loop = index
    except AttributeError:  # an exception type with __slots__
        return
    if hasattr(error, "add_note"):  # Python 3.11+
        error.add_note(f"seqwidgets: raised in loop {index}; the loops before it are kept")


class _Stopped(Exception):
    """Raised from the step callback to unwind the sampler when the run was cancelled."""


class CancelToken:
    """One run's stop request: cancelled once, never cleared.

    Whoever starts a run creates one and passes it to `SequenceSampler.frames` (the session
    does; the sampler makes its own otherwise). Cancelling it from any thread ends that run at
    the next model step, even before the run has begun: a stop can never be lost, and a new
    run gets a new token, so an old stop never reaches it.

    Example:
        >>> token = CancelToken()
        >>> token.cancel(); token.cancelled
        True
    """

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the run to stop (idempotent, thread-safe)."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._event.is_set()


class _PlanSteps:
    """A sampler's step callback as the engine's ``callback(loop, step, sigma, denoised)``.

    Checks the cancel token on every call. Samplers on the plan's sigmas report step ``i`` at
    ``sigmas[i]``. ``dpm_fast`` and ``dpm_adaptive`` (``own_grid``) walk a sigma grid of their
    own and report its sigma: each plan step that sigma has reached is reported once, and
    :meth:`finish` reports those left when the sampler returns (the last ones, which they do not
    step onto), so every loop reports steps ``0 .. steps - 1`` once whatever the sampler: the
    studio's and the CLI's progress count on it.
    """

    def __init__(
        self,
        plan: LoopPlan,
        callback: StepCallback | None,
        token: CancelToken,
        own_grid: bool = False,
    ) -> None:
        self.plan, self.callback, self.token, self.own_grid = plan, callback, token, own_grid
        self.sigmas = plan.sigmas  # the CPU copy: reading a float from it costs no device sync
        self.reported = -1  # own grid: the last plan step reported
        self.denoised: torch.Tensor | None = None

    def __call__(self, info: dict) -> None:
        if self.token.cancelled:
            raise _Stopped
        if self.callback is None:
            return
        if not self.own_grid:
            i = info["i"]
            self.callback(self.plan.index, i, float(self.sigmas[i]), info["denoised"])
            return
        sigma, self.denoised = float(info["sigma"]), info["denoised"]
        reached = max(int((self.sigmas[:-1] >= sigma).sum()) - 1, 0)
        for i in range(self.reported + 1, reached + 1):
            self.callback(self.plan.index, i, sigma, self.denoised)
        self.reported = max(self.reported, reached)

    def finish(self, result: torch.Tensor) -> None:
        """Report the plan steps an own-grid sampler did not reach (with its last estimate)."""
        if self.callback is None or not self.own_grid:
            return
        denoised = result if self.denoised is None else self.denoised
        for i in range(self.reported + 1, self.plan.steps):
            self.callback(self.plan.index, i, float(self.sigmas[i]), denoised)
        self.reported = self.plan.steps - 1


class SequenceSampler:
    """Runs the KSampler Sequence loop on a diffusers SD 1.x/2.x, SDXL, SD3/SD3.5 or Flux pipeline.

    Args:
        pipe: a diffusers pipeline of one of `seqwidgets.families.FAMILIES` (a ``unet`` or
            ``transformer``, a ``vae`` and a ``text_encoder``). It is used where it is: move it
            first (``sw.load_pipeline`` puts it on CUDA in fp16 when there is a GPU).

    Attributes:
        family: the pipeline's `seqwidgets.families.Family`.
        unet_calls: denoising-network forward passes so far (UNet or transformer: ``steps`` per
            loop with batched CFG, times the sampler's ``model_calls``; twice that with
            unsample; ``dpm_adaptive`` chooses its own number).
        stopped: whether the last run ended early because of :meth:`stop`.

    Example:
        >>> import seqwidgets as sw
        >>> sampler = sw.SequenceSampler(sw.testing.tiny_pipeline())
        >>> sampler.sample(sw.SequenceParams(steps=2, sequence_loop_count=2)).shape
        torch.Size([2, 4, 8, 8])
    """

    #: Settings that shape the sigma schedule: items of one batch must agree on them.
    BATCH_SHARED = (
        "steps",
        "sampler_name",
        "scheduler",
        "denoise_start",
        "denoise_seq",
        "sequence_loop_count",
        "unsample_latents",
        "width",
        "height",
    )

    def __init__(self, pipe):
        self.family = detect_family(pipe)
        # SD-style families read their noise schedule from the scheduler's betas.
        needed = (self.family.network, "vae", "text_encoder")
        for name in needed if self.family.flow else (*needed, "scheduler"):
            if getattr(pipe, name, None) is None:
                raise ValueError(
                    f"SequenceSampler needs a {self.family.label} pipeline with a {name!r}; "
                    f"got {type(pipe).__name__} without one"
                )
        self.pipe = pipe
        self.network = self.family.denoiser_network(pipe)
        self.device = module_device(self.network)  # offload hooks: the accelerator
        self.dtype = self.network.dtype  # frames are stored in the pipeline's dtype
        # The schedule is planned on the CPU; the denoiser reads a copy on the network's device
        # so that looking up a timestep never waits for the GPU.
        self.model_sampling = self.family.model_sampling(pipe)
        self._device_sampling = self.model_sampling.to(self.device)
        self.encoder = PromptEncoder(pipe, self.device)
        self.unet_calls = 0
        self.stopped = False
        self._token: CancelToken | None = None  # the latest run's
        self._running = threading.Lock()

    # -- public API ------------------------------------------------------------------------

    @property
    def text_encoder_calls(self) -> int:
        """Distinct prompts encoded so far (each costs one pass per text encoder)."""
        return self.encoder.encoded

    def stop(self) -> None:
        """End the current run at the next step boundary; finished frames are kept.

        Cancels the latest run's `CancelToken` (a run whose frames were asked for but not yet
        begun stops before its first step). Safe to call from another thread (a widget's Stop
        button).
        """
        token = self._token
        if token is not None:
            token.cancel()

    def image_size(self, params: SequenceParams) -> tuple[int, int]:
        """``(width, height)`` of the run's images: the settings', else the pipeline default."""
        default = self.family.default_image_size(self.pipe)
        width = params.width or default
        height = params.height or default
        factor = self.family.size_multiple(self.pipe)
        for name, value in (("width", width), ("height", height)):
            if value % factor:
                raise ValueError(
                    f"{name}={value} must be a multiple of {factor} for this "
                    f"{self.family.label} pipeline"
                )
        return width, height

    def latent_shape(self, params: SequenceParams) -> tuple[int, int, int, int]:
        """``(1, channels, height / 8, width / 8)`` for this pipeline and these settings."""
        width, height = self.image_size(params)
        factor = self.pipe.vae_scale_factor
        channels = self.family.latent_channels(self.pipe)
        return (1, channels, height // factor, width // factor)

    def empty_latent(self, params: SequenceParams) -> torch.Tensor:
        """The empty latent as ComfyUI leaves it: zeros in the model's scaling, every family.

        ComfyUI runs ``process_latent_in`` only on a latent with a non-zero value ("Don't shift
        the empty latent image", ``CFGGuider.sample``), so on SD3 and Flux loop 0 mixes its noise
        with zeros, not with the shifted ``-shift_factor * scaling_factor``. That matters
        whenever ``denoise_start < 1``.
        """
        return torch.zeros(self.latent_shape(params))

    def initial_latent(self, params: SequenceParams, latent_image=None, init_image=None):
        """Loop 0's input: ``latent_image``, an encoded ``init_image``, or the empty latent."""
        shape = self.latent_shape(params)
        if latent_image is not None and init_image is not None:
            raise ValueError("give latent_image or init_image, not both")
        if init_image is not None:
            from .decode import encode_image

            width, height = self.image_size(params)
            return encode_image(self.pipe.vae, init_image, size=(width, height)).float().cpu()
        if latent_image is None:
            return self.empty_latent(params)
        if not isinstance(latent_image, torch.Tensor):
            raise ValueError(f"latent_image must be a torch.Tensor, got {type(latent_image)}")
        latent = latent_image.detach().float().cpu()
        if latent.ndim == 3:
            latent = latent[None]
        if latent.ndim != 4 or latent.shape[0] != 1 or latent.shape[1] != shape[1]:
            raise ValueError(
                f"latent_image must have shape [{shape[1]}, h, w] or [1, {shape[1]}, h, w], "
                f"got {list(latent_image.shape)}"
            )
        return latent

    def plan(self, params: SequenceParams) -> list[LoopPlan]:
        """The run's per-loop plan with this pipeline's sigma slices."""
        return plan_sequence(params, self.model_sampling)

    def frames(
        self,
        params: SequenceParams,
        latent_image: torch.Tensor | None = None,
        init_image=None,
        *,
        start: int = 0,
        previous: torch.Tensor | None = None,
        callback: StepCallback | None = None,
        earlier: Callable[[int], torch.Tensor] | None = None,
        cancel: CancelToken | None = None,
    ) -> Iterator[Frame]:
        """Run the sequence, yielding each loop's :class:`Frame` as soon as it is done.

        Args:
            params: the settings.
            latent_image: loop 0's input latent (diffusers scaling), default the empty latent.
            init_image: an image to encode with the VAE as loop 0's input (PIL or array).
            start: the first loop to compute; loops before it are taken as done (branching).
            previous: the result of loop ``start - 1``, required when ``start > 0``.
            callback: ``callback(loop, step, sigma, denoised)`` after every model step.
            earlier: ``earlier(index)`` returns the latent of a loop before ``start``; needed
                only when resuming with ``color_coherence``, whose reference may be such a loop.
            cancel: this run's `CancelToken` (default: a new one). The run ends at the next step
                boundary once it is cancelled, before its first step if it already is; the
                frames already yielded stay valid and ``stopped`` is set. :meth:`stop` cancels
                it too. The token is never cleared.
        """
        token = self._token = cancel if cancel is not None else CancelToken()
        return self._frames(
            params, latent_image, init_image, start, previous, callback, token, earlier
        )

    def _frames(self, params, latent_image, init_image, start, previous, callback, token, earlier):
        if start == 0:
            x = self.initial_latent(params, latent_image, init_image)
        else:
            x = self._previous_latent(params, start, previous)
        for frames in self._run([params], x, start, callback, token, earlier):
            yield frames[0]

    def frames_batch(
        self,
        params_list: list[SequenceParams],
        *,
        start: int,
        previous: torch.Tensor,
        callback: StepCallback | None = None,
        earlier: Callable[[int], torch.Tensor] | None = None,
        cancel: CancelToken | None = None,
    ) -> Iterator[list[Frame]]:
        """Run several variations from one frame as one batch; yield each loop's frames.

        Every item starts from ``previous`` (the result of loop ``start - 1``) with its own
        settings; the UNet sees them all in one call per step. The items may differ in seed,
        seed mode, prompts, cfg, conditioning slerp and latent interpolation, which leave the
        sigma schedule alone; they must agree on everything that shapes it (steps, sampler,
        scheduler, denoise, loop count, unsample, size). Each item draws exactly the noise a
        separate run would, so results equal separate runs up to float round-off. ``cancel``
        as for :meth:`frames`.

        Example:
            >>> import seqwidgets as sw
            >>> sampler = sw.SequenceSampler(sw.testing.tiny_pipeline())
            >>> base = sw.SequenceParams(positive_seq="0: a red circle", steps=2,
            ...                          sequence_loop_count=3)
            >>> first = next(sampler.frames(base))
            >>> variations = [base.replace(seed=s) for s in (10, 20, 30)]
            >>> [len(f) for f in sampler.frames_batch(variations, start=1, previous=first.latent)]
            [3, 3]
        """
        token = self._token = cancel if cancel is not None else CancelToken()
        return self._frames_batch(params_list, start, previous, callback, token, earlier)

    def _frames_batch(self, params_list, start, previous, callback, token, earlier):
        if not params_list:
            raise ValueError("frames_batch needs at least one SequenceParams")
        shared = self.BATCH_SHARED
        first = params_list[0]
        for i, params in enumerate(params_list[1:], start=1):
            for name in shared:
                if getattr(params, name) != getattr(first, name):
                    raise ValueError(
                        f"frames_batch: item {i} has {name}={getattr(params, name)!r} but item 0 "
                        f"has {getattr(first, name)!r}; batched items must share {', '.join(shared)}"
                    )
        x = self._previous_latent(first, start, previous)
        x = x.repeat(len(params_list), 1, 1, 1)
        yield from self._run(params_list, x, start, callback, token, earlier)

    def sample(
        self,
        params: SequenceParams,
        latent_image: torch.Tensor | None = None,
        init_image=None,
        *,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """Run every loop and return the node's output: the stacked latents ``[N, C, h, w]``.

        If :meth:`stop` ends the run early, the finished loops are returned.
        """
        frames = list(self.frames(params, latent_image, init_image, callback=callback))
        if not frames:
            raise RuntimeError("the run was stopped before its first loop finished")
        return torch.stack([frame.latent for frame in frames])

    # -- the loop ----------------------------------------------------------------------------

    def _previous_latent(self, params, start: int, previous) -> torch.Tensor:
        if start <= 0:
            raise ValueError(f"start={start}: resuming needs start >= 1 (loop 0 has no previous)")
        if previous is None:
            raise ValueError("previous (the latent of loop start - 1) is required when start > 0")
        shape = self.latent_shape(params)
        if previous.numel() != math.prod(shape):
            raise ValueError(
                f"previous must hold one latent of shape {list(shape[1:])}, "
                f"got {list(previous.shape)}"
            )
        return previous.detach().float().cpu().reshape(shape)

    def _run(
        self,
        params_list: list[SequenceParams],
        x: torch.Tensor,
        start: int,
        callback: StepCallback | None,
        token: CancelToken,
        earlier: Callable[[int], torch.Tensor] | None = None,
    ) -> Iterator[list[Frame]]:
        """The loop itself, over a batch of settings; yields each loop's frames."""
        plans = [self.plan(params) for params in params_list]
        loops = len(plans[0])
        if not 0 <= start <= loops:
            raise ValueError(f"start={start} must be within 0..{loops}")
        if not self._running.acquire(blocking=False):
            raise RuntimeError(
                "this sampler is already running; wait for it or stop() it first "
                "(two runs must not interleave on one pipeline)"
            )
        try:
            self.stopped = False
            size = self.image_size(params_list[0])
            check_run_memory(self.pipe, *size, batch=len(params_list))  # before minutes of work
            coherence = ColorCoherence(self.pipe, params_list, plans, size, start, earlier)
            for index in range(start, loops):
                if token.cancelled:  # also before loop 0: a stop that came early is not lost
                    self.stopped = True
                    return
                loop_plans = [plan[index] for plan in plans]
                try:
                    # Colour coherence (ours, off by default: then x is returned untouched).
                    x = coherence.before_loop(loop_plans, x)
                    frames = self._run_loop(params_list, loop_plans, x, callback, token)
                    coherence.after_loop(frames)
                except _Stopped:
                    self.stopped = True
                    return
                except torch.OutOfMemoryError as error:
                    raise torch.OutOfMemoryError(
                        f"loop {index}: out of {self.device.type.upper()} memory. Lower width / "
                        "height, run fewer branches at once, load the pipeline in float16 "
                        "(sw.load_pipeline(..., dtype=torch.float16)) or call "
                        "pipe.enable_attention_slicing(); the frames before this loop are kept"
                    ) from error
                except Exception as error:
                    # Keep the error's own type (callers catch it), and say where it happened.
                    _mark_loop(error, index)
                    raise
                yield frames
                # The next loop starts from the stored frames, so a branch resumed from one later
                # computes bit for bit what this run computes now.
                x = torch.stack([frame.latent for frame in frames]).float()
            self.stopped = token.cancelled  # cancelled during the last loop's consumer
        finally:
            self._running.release()

    def _conditioned_denoiser(self, params_list, plans) -> CFGDenoiser:
        width, height = self.image_size(params_list[0])
        time_ids = self.family.time_ids(height, width)  # SDXL's size conditioning, else None
        return CFGDenoiser(
            self.network,
            self._device_sampling,
            [self.encoder.chain(plan.positive) for plan in plans],
            [self.encoder.chain(plan.negative) for plan in plans],
            [params.cfg for params in params_list],
            time_ids,
            family=self.family,
            guidance=[params.flux_guidance for params in params_list],
        )

    def _run_loop(
        self,
        params_list: list[SequenceParams],
        plans: list[LoopPlan],
        x_in: torch.Tensor,
        callback: StepCallback | None,
        token: CancelToken,
    ) -> list[Frame]:
        started = time.perf_counter()
        timings = {"unsample": 0.0, "sample": 0.0}
        params, plan = params_list[0], plans[0]  # what the batch shares: the sigma schedule
        ms = self._device_sampling
        x_in = x_in.to(self.device)
        result = x_in
        if plan.steps > 0:
            denoiser = self._conditioned_denoiser(params_list, plans)
            sigmas = plan.sigmas.to(self.device)
            seeds = [p.seed for p in plans]
            if params.unsample_latents and plan.index > 0:
                t0 = time.perf_counter()
                x = self._unsample(denoiser, x_in, plan.sigmas, _PlanSteps(plan, None, token))
                timings["unsample"] = time.perf_counter() - t0
            else:
                noise = torch.cat(
                    [
                        torch.randn(x_in[:1].shape, generator=torch.Generator("cpu").manual_seed(s))
                        for s in seeds
                    ]
                ).to(self.device)
                first_is_max = self.model_sampling.max_denoise(plan.sigmas)
                x = ms.noise_scaling(sigmas[0], noise, x_in, first_is_max)
            # A single item seeds its sampler noise as ComfyUI does; a batch, item by item.
            noise_sampler = None
            if len(seeds) > 1:
                noise_sampler = samplers.batch_noise_sampler(params.sampler_name, x, sigmas, seeds)
            t0 = time.perf_counter()
            own_grid = SAMPLER_SPECS_BY_NAME[params.sampler_name].model_calls is None
            on_step = _PlanSteps(plan, callback, token, own_grid)
            result = samplers.sample(
                params.sampler_name,
                denoiser,
                x,
                sigmas,
                callback=on_step,
                seed=seeds[0],
                noise_sampler=noise_sampler,
            )
            on_step.finish(result)
            timings["sample"] = time.perf_counter() - t0
            self.unet_calls += denoiser.calls
        frames = []
        for i, (item, item_plan) in enumerate(zip(params_list, plans, strict=True)):
            latent = result[i : i + 1]
            if item.use_latent_interpolation and item_plan.index > 0:
                mix = LATENT_INTERPOLATIONS[item.latent_interpolation_mode]
                latent = mix(item.latent_interp_strength, x_in[i : i + 1], latent)
            latent = latent[0].to("cpu", self.dtype)
            if not torch.isfinite(latent).all():
                raise FloatingPointError(
                    f"loop {item_plan.index}: the latent holds NaN or Inf values (in fp16 this is "
                    "an overflow: try float32, a lower cfg or fewer loops); the run stops here and "
                    "the earlier loops are kept"
                )
            frames.append(
                Frame(
                    index=item_plan.index,
                    seed=item_plan.seed,
                    latent=latent,
                    denoise=item_plan.denoise,
                    positive=item_plan.positive,
                    negative=item_plan.negative,
                    sigmas=item_plan.sigmas,
                    timings=dict(timings, total=time.perf_counter() - started),
                )
            )
        return frames

    def _unsample(self, denoiser, x: torch.Tensor, sigmas: torch.Tensor, on_step) -> torch.Tensor:
        """Run the deterministic ODE backwards from ``x`` up to ``sigmas[0]`` (Euler inversion).

        The loop's own schedule, reversed: ``[0, s_n-1, ..., s_0]``, with its first 0 replaced
        by the model's smallest sigma, since the denoiser is undefined at sigma 0. This is what
        ComfyUI's Unsampler does with flipped sigmas, carried all the way up (the node itself
        runs a single reverse step).
        """
        up = sigmas.flip(0).clone()
        up[0] = max(float(up[0]), float(self.model_sampling.sigma_min))
        return samplers.sample("euler", denoiser, x, up.to(self.device), callback=on_step)
