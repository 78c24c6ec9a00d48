"""The training loop every trained method uses: optimizer, accumulation, clipping, cancel, checkpoints, resume.

Built on accelerate (device placement, mixed precision on GPUs, gradient accumulation). Under
`accelerate launch` / torchrun with several processes it is data parallel: each process draws its own
micro-batches and the trained tensors' gradients are averaged before every optimizer step (only the main
process writes checkpoints). Randomness is drawn from a generator seeded by (seed, step, micro-step),
so a resumed run draws exactly what an uninterrupted run would: resume is bitwise on CPU.

Teacher predictions without a second model: `Originals` keeps copies of only the trained tensors and
swaps them in for a no-grad forward. Call the teacher *before* the student forward of a step, so the
autograd graph never sees swapped weights.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from concept_eraser.spec.events import Event, Progress, StageStarted
from concept_eraser.spec.files import atomic_write
from concept_eraser.spec.runloop import JobCancelled, JobContext, UserError

CHECKPOINT = "checkpoint.pt"
LossFn = Callable[[int, torch.Generator], tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class TrainSettings:
    steps: int
    lr: float
    optimizer: str = "adamw"  # "adamw", "adam", "sgd"
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0  # max global grad norm; None = no clipping
    grad_accum: int = 1
    checkpoint_every: int = 0  # 0 = only when cancelled and at the end
    seed: int = 0
    # autocast dtype for float32 models: "auto"/"no" none, or "fp16", "bf16"; a model loaded in half precision
    # always trains float32 master weights under autocast in its dtype (see train)
    mixed_precision: str = "auto"


def step_generator(seed: int, step: int, micro: int = 0) -> torch.Generator:
    """CPU generator for one (micro-)step, independent of everything that ran before it."""
    return torch.Generator("cpu").manual_seed((seed * 1_000_003 + step * 101 + micro) % (2**63))


class Originals:
    """Copies of the trained tensors at the start; `active()` swaps them in for teacher forwards."""

    def __init__(self, params: dict[str, torch.nn.Parameter]) -> None:
        self.params = params
        self.saved = {n: p.detach().clone() for n, p in params.items()}

    @contextmanager
    def active(self) -> Iterator[None]:
        current = {n: p.data for n, p in self.params.items()}
        try:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.data = self.saved[n]
                yield
        finally:
            for n, p in self.params.items():
                p.data = current[n]


# Float32 master values of half-precision parameters after training (see train): the saved model adds the
# float32 edit to the user's tensors (unlearn_job.in_stored_dtype) instead of the edit rounded to bf16, whose
# spacing (2^-8 relative) swallows edits of fine-tuning size. Keyed by id (tensors compare elementwise) with a
# weak reference, so an entry dies with its parameter.
_MASTERS: dict[int, tuple[weakref.ref, torch.Tensor]] = {}


def keep_master(p: torch.nn.Parameter, value: torch.Tensor) -> None:
    """Remember `value` (float32) as the exact trained value of half-precision parameter `p`."""
    if p.dtype in (torch.float16, torch.bfloat16) and value.shape == p.shape:
        key = id(p)
        _MASTERS[key] = (weakref.ref(p, lambda _r, key=key: _MASTERS.pop(key, None)), value.detach().float())


def master_value(p: torch.nn.Parameter) -> torch.Tensor | None:
    """p's float32 master value, when p still holds it rounded (else it was changed since, e.g. restored)."""
    ref, m = _MASTERS.get(id(p), (None, None))
    if ref is None or ref() is not p or m.shape != p.shape or not torch.equal(m.to(p.device, p.dtype), p.data):
        return None
    return m


def forget_masters() -> None:
    _MASTERS.clear()


def make_optimizer(params: list[torch.nn.Parameter], s: TrainSettings) -> torch.optim.Optimizer:
    if s.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=s.lr, betas=s.betas, weight_decay=s.weight_decay)
    if s.optimizer == "adam":
        return torch.optim.Adam(params, lr=s.lr, betas=s.betas, weight_decay=s.weight_decay)
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, weight_decay=s.weight_decay)
    raise UserError(f"unknown optimizer {s.optimizer!r}; choose adamw, adam or sgd")


def save_checkpoint(run_dir: Path, step: int, params: dict[str, torch.nn.Parameter],
                    optimizer: torch.optim.Optimizer, extra: dict) -> Path:
    state = {
        "step": step,
        "params": {n: p.detach().cpu().clone() for n, p in params.items()},
        "optimizer": optimizer.state_dict(),
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        **extra,
    }
    return atomic_write(run_dir / CHECKPOINT, lambda p: torch.save(state, p))


def load_checkpoint(run_dir: Path) -> dict | None:
    path = run_dir / CHECKPOINT
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def train(params: dict[str, torch.nn.Parameter], loss_fn: LossFn, settings: TrainSettings, ctx: JobContext,
          run_dir: Path | None = None, resume: bool = False, extra: dict | None = None,
          preview: Callable[[int], Generator[Event, None, None]] | None = None,
          ) -> Generator[Event, None, dict[str, float]]:
    """Run `settings.steps` optimizer steps of loss_fn(step, generator) over `params`.

    Yields Progress("unlearn", step, total, scalars) after every step and the preview's events at step 0
    and every ctx.preview_every steps. Cancel is checked before every micro-step; on cancel the last
    completed step is checkpointed (when run_dir is given) before JobCancelled propagates.
    """
    if not params:
        raise UserError("the method selected no parameters to train")
    extra = dict(extra or {})
    # Half-precision weights would round most updates away (bf16 keeps 8 mantissa bits: an Adam step of 1e-5
    # moves only weights below ~2e-3), so the trained tensors train as float32 master copies under autocast
    # and go back to their dtype at the end; the frozen rest stays in half precision.
    # Autocast is then required (float32 weights meet half activations); float32 models autocast only when asked.
    half = {n: p.dtype for n, p in params.items() if p.dtype in (torch.float16, torch.bfloat16)}
    mixed = settings.mixed_precision
    if half and mixed not in ("fp16", "bf16"):
        mixed = "bf16" if torch.bfloat16 in half.values() else "fp16"
    elif mixed == "auto":
        mixed = "no"
    # Accumulation is done here (loss / grad_accum, one optimizer step per grad_accum micro-steps).
    accelerator = _accelerator(mixed, next(iter(params.values())).device)
    plist = list(params.values())
    for n in half:
        m = master_value(params[n])  # a later train() on the same tensors continues from the exact values
        params[n].data = m.clone() if m is not None else params[n].data.float()
    try:
        return (yield from _train_loop(params, plist, loss_fn, settings, ctx, accelerator, run_dir, resume, extra,
                                       preview))
    finally:
        for n, dtype in half.items():
            master = params[n].data
            params[n].data = master.to(dtype)
            keep_master(params[n], master)


def _train_loop(params, plist, loss_fn, settings, ctx, accelerator, run_dir, resume, extra, preview):
    for p in plist:
        p.requires_grad_(True)
    optimizer = accelerator.prepare(make_optimizer(plist, settings))
    start = 0
    if resume and run_dir is not None:
        ck = load_checkpoint(run_dir)
        if ck is None:
            raise UserError(f"nothing to resume in {run_dir}: it has no {CHECKPOINT}")
        if set(ck["params"]) != set(params):
            raise UserError(f"{run_dir / CHECKPOINT} was written by a run that trained other parameters; start afresh")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(ck["params"][n].to(p.device, p.dtype))
        optimizer.load_state_dict(ck["optimizer"])
        torch.set_rng_state(ck["rng"]["torch"])
        start = int(ck["step"])
    yield StageStarted("unlearn", total=settings.steps)
    stats: dict[str, float] = {}
    t0 = time.perf_counter()
    step = start
    try:
        if preview is not None and start == 0:
            yield from _under(accelerator.autocast, preview(0))
        world, rank = accelerator.num_processes, accelerator.process_index
        while step < settings.steps:
            scalars: dict[str, float] = {}
            for micro in range(settings.grad_accum):
                ctx.check_cancelled()
                # each process draws its own micro-batches: with W processes a step averages W x grad_accum
                # draws, the same ones one process draws with W x grad_accum accumulation
                with accelerator.autocast():
                    loss, sc = loss_fn(step, step_generator(settings.seed, step, micro * world + rank))
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"the loss became {loss.item()} at step {step}; lower the learning "
                                             f"rate or enable gradient clipping")
                accelerator.backward(loss / settings.grad_accum)
                for k, v in sc.items():
                    scalars[k] = scalars.get(k, 0.0) + float(v) / settings.grad_accum
            if world > 1:
                _average_gradients(plist, accelerator)
            if settings.grad_clip is not None:
                scalars["grad_norm"] = float(accelerator.clip_grad_norm_(plist, settings.grad_clip))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            stats = scalars
            yield Progress("unlearn", step, settings.steps, scalars)
            if (run_dir is not None and settings.checkpoint_every and step % settings.checkpoint_every == 0
                    and accelerator.is_main_process):
                save_checkpoint(run_dir, step, params, optimizer, extra)
            if preview is not None and ctx.preview_every and step % ctx.preview_every == 0 and step < settings.steps:
                yield from _under(accelerator.autocast, preview(step))
    except JobCancelled:
        if run_dir is not None and step > start and accelerator.is_main_process:
            save_checkpoint(run_dir, step, params, optimizer, extra)
        raise
    finally:
        for p in plist:
            p.requires_grad_(False)
            p.grad = None
    if run_dir is not None and accelerator.is_main_process:
        save_checkpoint(run_dir, step, params, optimizer, extra)
    stats = {**stats, "steps": float(step), "train_seconds": time.perf_counter() - t0}
    return stats


def _average_gradients(plist: list[torch.nn.Parameter], accelerator) -> None:
    """Data parallel over `accelerate launch`/torchrun processes: every process steps with the mean gradient.

    The trained tensors are a method's chosen subset, not a module, so they are all-reduced here rather than
    through a DDP-wrapped model; a tensor that got no gradient in one process counts as zero in the mean.
    """
    for p in plist:
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        p.grad = accelerator.reduce(g, reduction="mean")


def _under(context, job: Generator[Event, None, None]) -> Generator[Event, None, None]:
    """Run each resumption of `job` inside context() (previews sample with float32 master weights in a half
    model, so they need the training's autocast), without holding it while the consumer handles an event."""
    while True:
        with context():
            try:
                event = next(job)
            except StopIteration:
                return
        yield event


def _accelerator(mixed: str, device: torch.device):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    # accelerate keeps one process-wide state, fixed by the first Accelerator; a long-lived app runs jobs on
    # models of other dtypes or devices, so a job that needs another precision or device starts it afresh
    # (under `accelerate launch` with several processes the distributed part stays).
    state = AcceleratorState._shared_state
    if state and (state.get("_mixed_precision") != mixed or getattr(state.get("device"), "type", None) != device.type):
        AcceleratorState._reset_state(reset_partial_state=PartialState().num_processes == 1)
    accelerator = Accelerator(mixed_precision=mixed, cpu=device.type == "cpu")
    if accelerator.num_processes > 1:
        _close_process_group_at_exit()
    return accelerator


_CLOSER: list = []


def _close_process_group_at_exit() -> None:
    """Close the process group accelerate opened before the interpreter exits. Left to finalisation, gloo's
    threads can still hold work objects when they are torn down and a finished run aborts ("terminate called
    without an active exception", exit code -6: 2 of 15 torchrun runs on a loaded CPU; destroy_process_group
    alone still gave 1 of 7). Dropping accelerate's state and collecting first releases them (0 of 30)."""
    if _CLOSER:
        return
    import atexit

    def close() -> None:
        import gc

        import torch.distributed as dist
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
        gc.collect()
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        gc.collect()

    _CLOSER.append(close)
    atexit.register(close)
