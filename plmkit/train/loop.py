"""The one training loop, on Hugging Face Accelerate: CPU, one GPU or many with `accelerate launch`.

`train_loop` is everything between a model with a loss function and a trained model:
mixed precision, gradient accumulation, length-bucketed batches, evaluation each epoch,
the best checkpoint kept, early stopping, resume, and a hard stop on a non-finite loss.
Checkpoints hold no pickled objects beyond the optimiser's and scheduler's state (loaded
with `weights_only=True`): weights are safetensors, the loop's state JSON. Randomness is
keyed by (seed, epoch, batch), so a resumed run replays the same batches and dropout.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from safetensors.torch import load_model, save_model
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from plmkit import faults
from plmkit.config import LoopConfig
from plmkit.data.batching import BucketBatchSampler, EpochDataset
from plmkit.errors import ConfigError, TrainingError
from plmkit.io import atomic_dir, atomic_write_json, existing_dir
from plmkit.models.dropout import restore_attention, use_fast_dropout
from plmkit.models.encoders import eager_attention
from plmkit.train.optim import build_optimizer, build_schedule
from plmkit.train.processes import broadcast_float, process_state

LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]
# evaluate(model, accelerator): the model itself (not wrapped); under `accelerate launch` every process calls
# it and must return the same metrics (score a share each and gather: plmkit.train.processes.across_processes)
EvalFn = Callable[[torch.nn.Module, Accelerator], dict[str, float]]
Callback = Callable[["LoopState"], None]


@dataclass
class LoopState:
    step: int = 0  # optimiser steps taken
    epoch: int = 0  # current epoch
    # batches of the current epoch consumed, by all processes together: the epoch's batches are one list (a
    # BucketBatchSampler's), process p of P takes every P-th from `batches_done` on, so a run resumes at the
    # same batch under any number of processes
    batches_done: int = 0
    best_metric: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # per epoch: dev metrics, losses, seconds
    losses: list[list[float]] = field(default_factory=list)  # [step, loss] every log_steps
    lrs: list[float] = field(default_factory=list)  # each parameter group's learning rate at the last step taken
    seconds: float = 0.0
    stopped_early: bool = False
    # what the run was made from (see `made_from`): a resumed run must be made from the same
    made_from: dict[str, Any] = field(default_factory=dict)


def made_from(
    features: Sequence[dict[str, Any]], lengths: Sequence[int], cfg: LoopConfig, processes: int = 1
) -> dict[str, Any]:
    """What a checkpoint is only valid with: the training examples (a digest of their token ids, or their
    lengths where they hold none), their number, and the options that fix the batches and the steps. An
    optimiser step takes grad_accum batches on each of `processes` processes: the product is what must stay,
    not either number (2 processes with grad_accum=1 step as 1 process with grad_accum=2)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(array("q", lengths).tobytes())
    # a sequence that says its items hold no input_ids (pretraining's segments, read from disk) is not read
    for item in features if getattr(features, "has_input_ids", True) else ():
        ids = item.get("input_ids") if isinstance(item, dict) else None
        if ids is not None:
            digest.update(repr(ids.tolist() if isinstance(ids, torch.Tensor) else ids).encode())
    return {"examples": len(features), "data": digest.hexdigest(), "batch_size": cfg.batch_size,
            "grad_accum": cfg.grad_accum, "processes": processes, "seed": cfg.seed,
            "bucket_size": cfg.bucket_size}  # fmt: skip


def batches_per_step(made: dict[str, Any]) -> int:
    """Batches an optimiser step takes, over all processes (a checkpoint from before `processes` was recorded
    ran in one)."""
    return made.get("grad_accum", 1) * made.get("processes", 1)


def check_made_from(path: Path, saved: dict[str, Any], now: dict[str, Any]) -> None:
    """TrainingError naming each difference between what the checkpoint at `path` was made from and now."""
    what = {"examples": "training examples", "data": "training data (token ids)"}
    per_step = ("grad_accum", "processes")  # their product must stay (batches_per_step), not each
    differ = [k for k in now if k in saved and saved[k] != now[k] and k not in per_step]
    then_steps, now_steps = batches_per_step(saved), batches_per_step(now)
    if differ or then_steps != now_steps:
        parts = [f"{what.get(k, k)}: {saved[k]} then, {now[k]} now" for k in differ if k != "data"]
        parts += [what["data"] + " differ"] if "data" in differ else []
        if then_steps != now_steps:  # the one difference a resume can make up for: say how
            p = now["processes"]
            fix = (
                f"grad_accum={then_steps // p} keeps it under {p} process{'es' if p > 1 else ''}"
                if then_steps % p == 0
                else f"{p} processes cannot share {then_steps} batches a step: resume under a number of "
                f"processes that divides {then_steps}"
            )
            parts.append(
                f"batches per optimiser step (grad_accum x processes): {then_steps} then "
                f"({saved.get('grad_accum', 1)} x {saved.get('processes', 1)}), {now_steps} now "
                f"({now['grad_accum']} x {p}); {fix}"
            )
        raise TrainingError(
            f"{path}: the checkpoint was made from other training data or options ({'; '.join(parts)}); "
            "resume with the same ones, or run without --resume to start afresh"
        )


def resolve_precision(requested: str) -> str:
    """`auto` uses bf16 only where it runs natively: a CUDA GPU with bf16, or a CPU with
    AVX512-BF16/AMX. On CPUs without them bf16 is emulated and far slower than fp32. fp16 needs a GPU."""
    if requested == "fp16" and not torch.cuda.is_available():
        raise ConfigError("mixed_precision: fp16 needs a GPU; use bf16 or no")
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return "no"
    return "bf16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "no"


def prefer_fast_attention(model: torch.nn.Module, precision: str, device: torch.device) -> None:
    """Under bf16 autocast on a CPU, PyTorch's fused attention (sdpa) with a padding mask takes a slow
    path: measured on e5-small (batch 32, 64 tokens, AMX CPU) eager attention trains 2.0x faster
    (0.47 s against 0.94 s a step); in fp32 sdpa is the faster (1.16 s against 1.36 s). Applies to
    every Hugging Face model inside `model` (a tagger's encoder, a feature extractor)."""
    if device.type == "cpu" and precision == "bf16":
        eager_attention(model)


def _save_checkpoint(path: Path, model: torch.nn.Module, optimizer, scheduler, state: LoopState) -> None:
    with atomic_dir(path) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        faults.point("checkpoint.files")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        atomic_write_json(tmp / "loop_state.json", state.__dict__)


def _load_checkpoint(path: Path, model: torch.nn.Module, optimizer, scheduler) -> LoopState:
    try:
        load_model(model, str(path / "model.safetensors"))
    except RuntimeError as e:  # another task, head, mode or freeze_layers than the run that wrote it
        first = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e))[:200]
        raise TrainingError(
            f"{path}: the checkpoint does not fit this model ({first}); resume with the options "
            "of the run that wrote it"
        ) from None
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    return LoopState(**json.loads((path / "loop_state.json").read_text()))


def batch_seed(seed: int, epoch: int, batch: int) -> int:
    return (seed * 1_000_003 + epoch) * 1_000_003 + batch


def _is_better(value: float, best: float | None, greater_is_better: bool) -> bool:
    return best is None or (value > best if greater_is_better else value < best)


class Trainee(torch.nn.Module):
    """The model and its loss function as one module, what Accelerate prepares: under several processes it is
    wrapped in DistributedDataParallel, which synchronises the gradients only of what runs inside its own
    forward, and loss functions call more than the model's forward (a pretraining family calls its
    submodules: model.bert, model.cls). The loss function gets the model itself (model.config and the like
    are there, not behind the wrapper)."""

    def __init__(self, model: torch.nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.loss_fn(self.model, batch)


def _autocast_model_forward(trainee: torch.nn.Module, model: torch.nn.Module, accelerator: Accelerator) -> None:
    """Under mixed precision, autocast where it was before the trainee existed: Accelerate's prepare put it on
    the trainee's forward (the whole loss function); it goes back onto the model's own forward, outputs in
    fp32, so a loss (a CRF's, a cross-entropy) is computed in fp32 as before and in one process or many."""
    if not accelerator.native_amp:
        return
    from types import MethodType

    from accelerate.utils import convert_outputs_to_fp32, get_mixed_precision_context_manager

    trainee.__dict__.pop("forward", None)  # the class's own forward again
    trainee.__dict__.pop("_original_forward", None)
    context = get_mixed_precision_context_manager(accelerator.native_amp, accelerator.autocast_handler)
    forward = model._original_forward = model.forward
    if hasattr(forward, "__func__"):  # a bound method, as Accelerate's prepare does it
        model.forward = MethodType(convert_outputs_to_fp32(context(forward.__func__)), model)
    else:
        model.forward = convert_outputs_to_fp32(context(forward))


@dataclass
class Clock:
    """Training seconds so far, a resumed run's included. Under a time budget every process takes the main
    process's count at each optimiser step (`tick`), so that all stop at the same step and give the schedule
    the same time fraction: processes that disagreed would part ways (one stepping while another waits)."""

    started: float  # time.monotonic() at the start, less the seconds of the run being resumed
    seconds: float = 0.0  # as of the last tick

    def tick(self, device: torch.device) -> None:
        self.seconds = broadcast_float(time.monotonic() - self.started, device)


@dataclass
class Run:
    """Everything one training run holds between its steps."""

    accelerator: Accelerator
    model: torch.nn.Module  # the model itself: what is evaluated and saved
    trainee: torch.nn.Module  # the model with its loss, prepared by Accelerate (DDP-wrapped under several processes)
    optimizer: Any
    scheduler: Any
    loader: DataLoader
    sampler: BucketBatchSampler
    dataset: EpochDataset
    state: LoopState
    cfg: LoopConfig
    checkpoint_path: Path
    clock: Clock

    @property
    def started(self) -> float:
        return self.clock.started

    def out_of_budget(self) -> bool:
        cfg, state = self.cfg, self.state
        return bool(
            (cfg.max_steps and state.step >= cfg.max_steps)
            or (cfg.time_budget_minutes and self.clock.seconds >= 60 * cfg.time_budget_minutes)
        )

    def checkpoint(self) -> None:
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            _save_checkpoint(
                self.checkpoint_path,
                self.model,
                self.optimizer,
                self.scheduler,
                self.state,
            )

    def discard_checkpoint(self) -> None:
        """A finished run writes no checkpoint (the model is saved) and removes any from earlier steps:
        writing the model and twice its size of optimiser state again at the end only cost time."""
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            for path in (self.checkpoint_path, self.checkpoint_path.with_name(self.checkpoint_path.name + ".old")):
                shutil.rmtree(path, ignore_errors=True)


OptimizerFn = Callable[[torch.nn.Module], torch.optim.Optimizer]
ScheduleFn = Callable[[torch.optim.Optimizer, int, Callable[[], float] | None], Any]


def setup(
    model: torch.nn.Module,
    loss_fn: LossFn,
    features: Sequence[dict[str, Any]],
    lengths: Sequence[int],
    collate: Callable,
    cfg: LoopConfig,
    output_dir: Path,
    *,
    optimizer: OptimizerFn,
    schedule: ScheduleFn,
    resume: bool,
    find_unused_parameters: bool,
) -> Run:
    """Accelerator, batches, optimiser and schedule, all prepared; the loop's state, from the checkpoint
    when resuming. `optimizer(model)` builds the optimiser; `schedule(optimizer, total_steps, time_fraction)`
    its learning-rate schedule."""
    processes = process_state().num_processes  # joins the launcher's process group (gloo without a GPU), if any
    # parameters frozen after wrapping (gradual unfreezing) get no gradient, nor do those a loss leaves out (a
    # tagger's pooler, BERT's NSP head when pretraining MLM alone): DDP must be told to expect that
    unused = find_unused_parameters or processes > 1
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if unused else []
    # accelerate keeps its state process-wide: a second run in the same process with another precision
    # would be refused, so each run starts from a fresh state (the distributed process group is kept)
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    precision = resolve_precision(cfg.mixed_precision)
    accelerator = Accelerator(
        mixed_precision=precision, gradient_accumulation_steps=cfg.grad_accum, kwargs_handlers=handlers
    )
    prefer_fast_attention(model, precision, accelerator.device)
    if cfg.fast_dropout and accelerator.device.type == "cpu":  # a GPU's own dropout kernels are fused already
        use_fast_dropout(model)  # attention restored by train_loop when it ends
    set_seed(cfg.seed)
    dataset = EpochDataset(features)
    sampler = BucketBatchSampler(lengths, cfg.batch_size, cfg.seed, cfg.bucket_size)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
    opt = bare = optimizer(model)
    # the loader, prepared, gives this process every num_processes-th batch of the sampler's (Accelerate's
    # BatchSamplerShard; the last ones padded from the start of the epoch so every process takes as many)
    trainee, opt, loader = accelerator.prepare(Trainee(model, loss_fn), opt, loader)
    _autocast_model_forward(accelerator.unwrap_model(trainee), model, accelerator)
    # the schedule counts optimiser steps, stepped once a step by the loop (a prepared scheduler would step
    # num_processes times a step): P processes with grad_accum A follow the schedule of one with P * A
    total_steps = math.ceil(len(loader) / cfg.grad_accum) * cfg.epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    clock = Clock(time.monotonic())
    time_fraction = None
    if cfg.time_budget_minutes:
        time_fraction = lambda: clock.seconds / (60 * cfg.time_budget_minutes)  # noqa: E731
    scheduler = schedule(bare, total_steps, time_fraction)
    path = output_dir / "checkpoint"
    state, now = LoopState(), made_from(features, lengths, cfg, accelerator.num_processes)
    if resume:
        found = existing_dir(path)
        if found is None:
            why = (
                "the run finished (a finished run removes its checkpoint)"
                if (output_dir / "model.safetensors").is_file()
                else f"it stopped before its first checkpoint (every save_steps={cfg.save_steps} steps, or an epoch)"
                if cfg.save_steps
                else "it stopped before its first checkpoint (one is written after each epoch; save_steps=N adds more)"
            )
            raise TrainingError(f"{path}: no checkpoint to resume from: {why}; run without --resume to start afresh")
        state = _load_checkpoint(found, model, opt, scheduler)
        check_made_from(found, state.made_from, now)
        accelerator.print(f"resuming from step {state.step} (epoch {state.epoch + 1}, batch {state.batches_done})")
    state.made_from = now
    clock.started = time.monotonic() - state.seconds  # a resumed run keeps its budget
    clock.seconds = state.seconds
    return Run(accelerator, model, trainee, opt, scheduler, loader, sampler, dataset, state, cfg, path, clock)


def run_epoch(run: Run, callbacks: Sequence[Callback], before_batch: Callback | None) -> None:
    """The batches of the current epoch (the rest of it, when resuming mid-epoch), or up to the budget."""
    accelerator, trainee, optimizer, state, cfg = run.accelerator, run.trainee, run.optimizer, run.state, run.cfg
    processes, rank = accelerator.num_processes, accelerator.process_index
    run.dataset.epoch = state.epoch
    # the epoch's batches from `batches_done` on (the rest of it, when resuming mid-epoch, whatever number of
    # processes consumed the first ones); Accelerate's loader sets the sampler's epoch from its own count of
    # passes, which starts at 0 in a resumed process (every later epoch would replay the first one's order):
    # tell it the real epoch
    start, total = state.batches_done, run.sampler.total
    run.sampler.set_epoch(state.epoch)
    run.sampler.start = start
    if hasattr(run.loader, "set_epoch"):
        run.loader.set_epoch(state.epoch)
    trainee.train()
    per_process = math.ceil(total / processes)
    bar = tqdm(
        total=per_process,
        initial=per_process - len(run.loader),
        desc=f"epoch {state.epoch + 1}/{cfg.epochs}",
        disable=not (cfg.progress and accelerator.is_local_main_process),
        leave=False,
    )
    running, count = 0.0, 0
    for i, batch in enumerate(run.loader):
        # dropout draws from a stream keyed by (seed, epoch, batch): a resumed run replays it exactly, and
        # the batch's place in the epoch (not in this process's share) keys it under any number of processes
        torch.manual_seed(batch_seed(cfg.seed, state.epoch, start + i * processes + rank))
        if before_batch is not None:
            before_batch(state)
        with accelerator.accumulate(trainee):
            loss = trainee(batch)
            # the mean over the processes' batches: what is logged, and every process stops together on a
            # non-finite one (a process stopping alone would leave the others waiting at the next all-reduce)
            seen = accelerator.reduce(loss.detach().float(), "mean") if processes > 1 else loss.detach()
            if not torch.isfinite(seen):
                raise TrainingError(
                    f"loss became {seen.item()} at step {state.step + 1} (epoch {state.epoch + 1}); "
                    "training stopped and nothing was saved from this step: lower lr or check the data"
                )
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                state.lrs = [g["lr"] for g in optimizer.param_groups]
                if cfg.time_budget_minutes:
                    run.clock.tick(accelerator.device)  # before the schedule reads its time fraction
            if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                accelerator.clip_grad_norm_(trainee.parameters(), cfg.max_grad_norm)
            optimizer.step()
            if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                run.scheduler.step()
            optimizer.zero_grad()
        state.batches_done = min(total, start + (i + 1) * processes)
        running, count = running + seen.item(), count + 1
        bar.update(1)
        if accelerator.sync_gradients:
            state.step += 1
            if state.step % cfg.log_steps == 0:
                state.losses.append([state.step, running / count])
                bar.set_postfix(loss=f"{running / count:.4f}")
                running, count = 0.0, 0
            state.seconds = time.monotonic() - run.started
            if cfg.save_steps and state.step % cfg.save_steps == 0:
                run.checkpoint()
            faults.point("step")
            for callback in callbacks:
                callback(state)
            if run.out_of_budget():
                break
    bar.close()


def end_of_epoch(
    run: Run,
    evaluate: EvalFn | None,
    metric: str,
    greater_is_better: bool,
    save_best: Callable[[torch.nn.Module, LoopState], None] | None,
) -> bool:
    """Evaluate, keep the best model, checkpoint; True when early stopping ends the run."""
    accelerator, model, state, cfg = run.accelerator, run.model, run.state, run.cfg
    finished_epoch = state.batches_done >= run.sampler.total
    record: dict[str, Any] = {"epoch": state.epoch + 1, "step": state.step}
    if evaluate is not None:
        model.eval()
        with torch.no_grad():
            record.update(evaluate(model, accelerator))
        model.train()
    state.seconds = time.monotonic() - run.started
    record["seconds"] = round(state.seconds, 2)
    state.history.append(record)
    accelerator.print("  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
    value = record.get(metric)
    if value is not None and _is_better(value, state.best_metric, greater_is_better):
        state.best_metric, state.best_epoch, state.bad_epochs = value, state.epoch, 0
        if save_best is not None and accelerator.is_main_process:
            save_best(model, state)
    elif value is not None:
        state.bad_epochs += 1
    if finished_epoch:
        state.epoch, state.batches_done = state.epoch + 1, 0
    if cfg.patience and state.bad_epochs >= cfg.patience:
        state.stopped_early = True
        accelerator.print(f"early stopping: no improvement in {metric} for {cfg.patience} epochs")
    if not (state.stopped_early or state.epoch >= cfg.epochs or run.out_of_budget()):
        run.checkpoint()  # the last one is not written: a finished run has nothing to resume
    return state.stopped_early


def train_loop(
    model: torch.nn.Module,
    loss_fn: LossFn,
    features: Sequence[dict[str, Any]],
    lengths: Sequence[int],
    collate: Callable[[list], dict[str, torch.Tensor]],
    cfg: LoopConfig,
    output_dir: str | Path,
    *,
    evaluate: EvalFn | None = None,
    metric: str = "loss",
    greater_is_better: bool = False,
    save_best: Callable[[torch.nn.Module, LoopState], None] | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    before_batch: Callback | None = None,
    find_unused_parameters: bool = False,
    optimizer: OptimizerFn | None = None,
    schedule: ScheduleFn | None = None,
) -> LoopState:
    """Train `model` on `features`; `loss_fn(model, batch)` returns the scalar loss.

    After each epoch, `evaluate` returns dev metrics; when `metric` improves,
    `save_best(model, state)` writes the model (without `evaluate`, once: the model at the end).
    A checkpoint for `resume` is kept in `output_dir/checkpoint` while the run goes on (every
    `save_steps` and at the end of each epoch but the last) and removed when it finishes.
    `before_batch(state)` runs before every batch (gradual unfreezing
    sets `requires_grad` there); `callbacks(state)` after every optimiser step. `optimizer(model)`
    and `schedule(optimizer, total_steps, time_fraction)` default to AdamW over `cfg`'s weight decay
    and `cfg.schedule` (plmkit.train.optim).
    """
    optimizer = optimizer or (lambda m: build_optimizer(m, cfg))
    schedule = schedule or (lambda opt, total, fraction: build_schedule(opt, cfg, total, fraction))
    run = setup(
        model,
        loss_fn,
        features,
        lengths,
        collate,
        cfg,
        Path(output_dir),
        optimizer=optimizer,
        schedule=schedule,
        resume=resume,
        find_unused_parameters=find_unused_parameters,
    )
    try:
        while run.state.epoch < cfg.epochs and not run.out_of_budget():
            run_epoch(run, callbacks, before_batch)
            if end_of_epoch(run, evaluate, metric, greater_is_better, save_best):
                break
        if evaluate is None and save_best is not None and run.accelerator.is_main_process:
            save_best(run.model, run.state)  # no dev data: the model at the end
    finally:
        restore_attention(model)
    run.discard_checkpoint()  # after the model is saved: until then, a kill leaves the checkpoint to resume from
    return run.state
