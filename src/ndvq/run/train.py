"""The training loop: setup, loop, eval, checkpoint - in that order, readable in one sitting.

Lightning Fabric owns devices, DDP (gloo on CPU, NCCL on GPU), precision and launching; the rest is
plain PyTorch. The model computes, the objective (``ndvq.objectives.Objective``) weighs the losses,
and one :class:`~ndvq.run.state.TrainState` holds what is checkpointed besides weights and optimisers.
Rank 0 alone writes the run directory. Host syncs happen only at log, validation and checkpoint steps;
a step with non-finite gradients is skipped on the device (fused AdamW ``found_inf``).

Example:
    >>> from ndvq.config import load_config
    >>> result = train(load_config(None, ["train.max_steps=2"]))      # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ndvq import build
from ndvq.config import Config, ConfigError, config_to_dict
from ndvq.data.common import valid_mask
from ndvq.errors import NonFiniteLossError
from ndvq.metrics import psnr
from ndvq.quantizers.base import usage_from_counts
from ndvq.quantizers.usage import CodeUsageTracker
from ndvq.run import rundir
from ndvq.run.checkpoint import (
    rng_state,
    save_checkpoint,
    update_best,
)
from ndvq.run.progress import MetricsLogger, Progress, start_text, summary_text, write_recon_samples
from ndvq.run.session import batch_counts, loader, resolve_run_dir, setup
from ndvq.run.signals import StopFlag, launch_ranks
from ndvq.run.state import Hooks, Session, TrainResult
from ndvq.run.trackers import open_trackers

__all__ = ["train", "TrainResult", "Hooks", "NonFiniteLossError", "resolve_run_dir"]


def train(cfg: Config, resume: str | Path | None = None, on_validation: Callable | None = None,
          on_warning: Callable | None = None, overwrite: bool = False,
          on_finish: Callable | None = None) -> TrainResult:
    """Train ``cfg`` (or continue the run ``resume``) and return rank 0's :class:`TrainResult`.

    One writer per run directory: the process that starts rank 0 holds ``<run>/.lock`` for the whole
    job. A start that fails before its first logged step or checkpoint removes the directory it made.

    Args:
        cfg: validated config.
        resume: a run directory or checkpoint to continue exactly. Default None (``cfg.run.resume``).
        on_validation: ``f(step, val_metrics)`` after each validation; may raise to stop. Default None.
        on_warning: ``f(records) -> list[str]``, new warning lines for the metrics so far (e.g.
            ``ndvq.diagnostics.doctor.warning_callback(config)``). Default None.
        overwrite: start afresh in ``run.root/run.name`` even if it holds a run (its files are removed
            once the lock is held). Default False.
    """
    from lightning_fabric import Fabric

    resume = resume if resume is not None else cfg.run.resume
    run_dir = resolve_run_dir(cfg, resume, overwrite)
    t = cfg.train
    external = any(k in os.environ for k in ("LOCAL_RANK", "SLURM_NTASKS", "PMI_SIZE"))
    multi = t.num_nodes > 1 or (str(t.devices) not in ("1", "auto") and t.devices != 1)
    strategy = "ddp_spawn" if multi and not external and t.strategy in ("auto", "ddp") else t.strategy
    precision = "32-true" if t.precision in ("32", "32-true") else t.precision
    try:
        fabric = Fabric(accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
                        strategy=strategy, precision=precision)
    except (ValueError, RuntimeError, TypeError) as e:
        raise ConfigError(f"cannot set up train.accelerator/devices/precision: {' '.join(str(e).split())}") from None
    build.check_memory(cfg)  # before anything is allocated or written
    lock = rundir.RunLock(run_dir).acquire() if fabric.global_rank == 0 else None
    try:
        if lock is not None:
            rundir.clear_run_dir(run_dir) if overwrite else rundir.remove_temp_files(run_dir)
        args = (cfg, run_dir, resume, Hooks(on_validation, on_warning, on_finish))
        if strategy.endswith("spawn"):
            result = launch_ranks(fabric, _run, args, run_dir)
        else:
            fabric.launch()
            result = _run(fabric, *args)
    except BaseException:
        if lock is not None and not rundir.has_progress(run_dir):
            lock.remove_run_dir()
        raise
    finally:
        if lock is not None:
            lock.release()
    if lock is not None and not rundir.has_progress(run_dir):  # stopped by a signal before its first step
        lock.remove_run_dir()
    return result


# ---------------------------------------------------------------------------------------- loop
def _run(fabric, cfg: Config, run_dir: Path, resume, hooks: Hooks) -> TrainResult:
    with StopFlag(escalate=fabric.world_size == 1) as stop:  # a signal during setup stops at the first poll
        return _loop(setup(fabric, cfg, run_dir, resume, hooks), resume, stop)


def _loop(s: Session, resume, stop: StopFlag) -> TrainResult:
    fabric, cfg, run_dir = s.fabric, s.cfg, s.run_dir
    t, st = cfg.train, s.state
    if s.rank0:
        print(start_text(s, {"train": s.train_ds, "val": s.val_ds}), flush=True)
    skipped = rundir.read_metrics(run_dir).skipped if s.rank0 and resume is not None else 0
    if skipped:  # a half-written last line of a crash, or a corrupted file: dropped when the file is rewritten
        print(f"ndvq: warning: {rundir.metrics_path(run_dir)}: {skipped} malformed line(s) skipped", file=sys.stderr)
    trackers = open_trackers(t.loggers, run_dir, enabled=s.rank0)
    trackers.log_config(config_to_dict(cfg))
    logger = MetricsLogger(run_dir, resume_step=st.step if resume is not None else None, elapsed=st.elapsed,
                           enabled=s.rank0, trackers=trackers)
    progress = Progress(s.total, initial=st.step, enabled=s.rank0)
    acc: dict[str, torch.Tensor] = {}
    last_train, last_val, n_acc, t_last = {}, {}, 0, time.time()
    first_step = st.step + 1 if t.compile else 1  # the step that compiles (every session); else step 1 only
    with logger, progress:  # closed (TensorBoard flushed) however the loop ends
        while st.step < s.total and not stop.requested:
            batches = iter(loader(s, st.epoch, skip=st.batch_in_epoch))
            for _ in range(s.steps_per_epoch - st.batch_in_epoch // t.grad_accum):
                micro = [fabric.to_device(next(batches)) for _ in range(t.grad_accum)]
                scalars = train_step(s, micro)
                st.step, st.batch_in_epoch = st.step + 1, st.batch_in_epoch + t.grad_accum
                for k, v in scalars.items():
                    acc[k] = acc[k] + v if k in acc else v.clone()
                n_acc += 1
                progress.update()
                if st.step == first_step and s.rank0 and (progress.bar is None or t.compile):
                    progress.write(f"step {st.step}/{s.total} done in {time.time() - t_last:.1f} s"
                                   + (" (torch.compile time included: train.compile=true)" if t.compile else ""))
                _check_nonfinite(s)
                if st.step % t.log_interval == 0 or st.step >= s.total:
                    rec = log_train(s, logger, acc, n_acc, time.time() - t_last)
                    if rec["nonfinite_steps"] > last_train.get("nonfinite_steps", 0):
                        progress.write(f"warning: {int(rec['nonfinite_steps'])} step(s) skipped so far because the "
                                       f"loss or gradient was not finite (step {st.step})")
                    last_train, acc, n_acc, t_last = rec, {}, 0, time.time()
                    progress.show(rec)
                # -------------------------------------------------------------- eval
                if len(s.val_ds) and (st.step % s.intervals[0] == 0 or st.step >= s.total):
                    last_val = validate(s)
                    _after_validation(s, logger, progress, last_val)
                if s.rank0 and (st.step % s.intervals[1] == 0 or st.step >= s.total):
                    sample_dir = rundir.samples_dir(run_dir) / f"step{st.step:07d}"
                    write_recon_samples(fabric, s.eval_net, s.val_ds if len(s.val_ds) else s.train_ds, sample_dir)
                    trackers.log_media(st.step, sorted(sample_dir.iterdir()))
                # -------------------------------------------------------------- checkpoint
                stop.poll(fabric, st.step % t.log_interval == 0)
                if st.step % s.intervals[2] == 0 or st.step >= s.total or stop.requested:
                    save(s, logger)
                if st.step >= s.total or stop.requested:
                    break
            else:
                st.epoch, st.batch_in_epoch = st.epoch + 1, 0
        if s.rank0 and s.hooks.on_finish is not None:
            trackers.log_findings(s.hooks.on_finish(logger.records, s.run_dir))
    stopped = "interrupted" if stop.requested else "finished"
    if s.rank0:
        print(summary_text(run_dir, logger.records, st.best, logger.elapsed(), st.step, stopped), flush=True)
    return TrainResult(run_dir, st.step, st.epoch, stopped, st.best[0][0] if st.best else None, last_train, last_val,
                       signal=int(stop.signum) if stop.requested else None)


def train_step(s: Session, micro: list[dict]) -> dict[str, torch.Tensor]:
    """One optimiser step over ``grad_accum`` micro-batches; returns averaged device scalars."""
    fabric, o, epoch, step = s.fabric, s.opt, s.state.epoch, s.state.step
    last_layer = getattr(getattr(s.net, "backbone", None), "last_layer", None)  # adaptive adversarial weight
    scalars: dict[str, torch.Tensor] = {}
    pairs = []
    o.model.train()
    for i, batch in enumerate(micro):
        x, mask = batch["data"], valid_mask(batch)
        with fabric.no_backward_sync(o.model, enabled=i < len(micro) - 1):
            out = o.model(x)
            res = s.objective(x, out, epoch, step=step, last_layer=last_layer, mask=mask)
            fabric.backward(res.loss / len(micro))
        counts = batch_counts(s.net, out, batch)
        batch_scalars = dict(res.scalars)
        if counts is not None and mask is not None and "perplexity" in batch_scalars:  # real positions only
            batch_scalars["perplexity"], batch_scalars["usage"] = usage_from_counts(counts)
        for k, v in batch_scalars.items():
            v = v.detach().float() / len(micro)
            scalars[k] = scalars[k] + v if k in scalars else v
        if counts is not None:
            s.tracker = s.tracker or _tracker(s, counts)
            s.tracker.update(counts)
        pairs.append((x, out.reconstruction.detach()))
    bad = o.step_model(fabric, s.cfg.train.grad_clip, scalars.get("loss"))
    if s.ema is not None:  # a skipped (non-finite) step left the weights as they were: averaging them is harmless
        s.ema.update_parameters(s.net)
    if o.disc is not None and s.objective.adversarial_active(epoch, step):
        scalars.update(o.step_discriminator(fabric, s.objective, pairs, (epoch, step), s.cfg.train.grad_clip))
    o.scheduler.step()
    s.bad_total += bad
    s.bad_run = (s.bad_run + bad) * bad
    return scalars


def _tracker(s: Session, counts: torch.Tensor) -> CodeUsageTracker:
    """The sliding-window code-usage tracker, shaped like the per-code counts ``[G, K]``."""
    tracker = CodeUsageTracker(*counts.shape, s.cfg.train.usage_window).to(counts.device)
    if s.state.tracker is not None:
        tracker.load_state_dict(s.state.tracker)
    return tracker


def _check_nonfinite(s: Session) -> None:
    """Stop after ``train.max_nonfinite_steps`` consecutive non-finite steps, naming the intact checkpoint
    (``save`` never writes one while diverging) and advice that fits the config."""
    t, st = s.cfg.train, s.state
    if st.step % min(t.log_interval, t.max_nonfinite_steps) or s.bad_run.item() < t.max_nonfinite_steps:
        return
    last = rundir.checkpoints_dir(s.run_dir) / "last.ckpt"
    if s.saved_step is not None and last.is_file():
        where = f"the last good checkpoint is {last} (step {s.saved_step}): continue with --resume {s.run_dir}"
    else:
        where = "no checkpoint was written before it: start afresh with --overwrite"
    advice = [f"lower train.learning_rate (now {t.learning_rate:g})"]
    advice += [] if t.grad_clip else ["set train.grad_clip=1.0"]
    advice += [] if str(t.precision).startswith("32") else [f"use train.precision=32 (now {t.precision})"]
    raise NonFiniteLossError(f"stopped at step {st.step}: {t.max_nonfinite_steps} consecutive steps with a non-finite "
                             f"loss or gradient; {where}. Try: {', '.join(advice)}")


def log_train(s: Session, logger: MetricsLogger, acc: dict, n_acc: int, seconds: float) -> dict:
    """Average the accumulated scalars over ranks and steps (one host sync) and log them."""
    t, fabric = s.cfg.train, s.fabric
    names = sorted(acc)
    vals = [acc[k] / max(n_acc, 1) for k in names]
    if s.tracker is not None:
        names += ["window_usage", "dead_codes"]
        vals += [s.tracker.window_usage().float(), s.tracker.dead_codes().float()]
    names.append("nonfinite_steps")
    vals.append(s.bad_total.float())
    stacked = torch.stack([v.reshape(()).to(fabric.device) for v in vals])
    if fabric.world_size > 1:
        stacked = fabric.all_reduce(stacked, reduce_op="mean")
    rec = dict(zip(names, stacked.tolist()))
    rec.update(lr=s.opt.raw.param_groups[0]["lr"],
               samples_per_sec=n_acc * t.batch_size * fabric.world_size * t.grad_accum / max(seconds, 1e-9),
               skipped_files=len(getattr(s.train_ds, "skipped", None) or []))
    return logger.log(rec, s.state.step, s.state.epoch, "train")


# ---------------------------------------------------------------------------------------- eval
@torch.no_grad()
def validate(s: Session) -> dict[str, float]:
    """Mean validation scalars over ``train.val_batches`` batches of each rank's shard, reduced over ranks."""
    fabric, net = s.fabric, s.eval_net
    net.eval()
    sums: dict[str, torch.Tensor] = {}
    counts, n = None, 0
    for i, batch in enumerate(loader(s, 0, train=False)):
        if s.cfg.train.val_batches is not None and i >= s.cfg.train.val_batches:
            break
        batch = fabric.to_device(batch)
        x, mask = batch["data"], valid_mask(batch)
        with fabric.autocast():
            out = net(x)
            res = s.objective(x, out, s.state.epoch, extras=False, mask=mask)
        batch_sums = {k: v.detach().float() * len(x) for k, v in res.scalars.items() if k not in ("perplexity", "usage")}
        batch_sums["psnr"] = psnr(x.float(), out.reconstruction.float(), getattr(s.val_ds, "data_range", None),
                                  mask=mask).sum()
        for k, v in batch_sums.items():
            sums[k] = sums[k] + v if k in sums else v
        c = batch_counts(net, out, batch)
        counts = c if counts is None else (counts + c if c is not None else counts)
        n += len(x)
    names = sorted(sums)
    stacked = torch.stack([sums[k] for k in names] + [torch.tensor(float(n), device=fabric.device)])
    if fabric.world_size > 1:
        stacked = fabric.all_reduce(stacked, reduce_op="sum")
        counts = fabric.all_reduce(counts, reduce_op="sum") if counts is not None else None
    vals = stacked.tolist()
    res = {k: v / max(vals[-1], 1) for k, v in zip(names, vals[:-1])}
    if counts is not None:
        ppl, usage = usage_from_counts(counts)
        res.update(perplexity=float(ppl), usage=float(usage))
    if s.ema is None:
        net.train()
    return res


def _after_validation(s: Session, logger: MetricsLogger, progress: Progress, val: dict) -> None:
    """Log the validation, keep the best checkpoints, print new doctor warnings, call the hook."""
    st, t = s.state, s.cfg.train
    logger.log(val, st.step, st.epoch, "val")
    st.best, best_path = update_best(st.best, val["recon_loss"], st.step, rundir.checkpoints_dir(s.run_dir),
                                     t.keep_checkpoints, delete=s.rank0)
    if best_path is not None:
        save(s, logger, best_path)
    if s.rank0 and s.hooks.on_warning is not None:
        for line in s.hooks.on_warning(logger.records):
            progress.write(line)
    if s.hooks.on_validation is not None:
        s.hooks.on_validation(st.step, val)


# ---------------------------------------------------------------------------------------- checkpoint
def save(s: Session, logger: MetricsLogger, path: Path | None = None) -> None:
    """Write a checkpoint (rank 0) unless the run is diverging: the last good one stays intact."""
    if s.bad_run.item() != 0:
        return
    st = s.state
    st.nonfinite_steps = int(s.bad_total.item())
    st.weight_ema_updates = int(s.ema.n_averaged) if s.ema is not None else 0
    st.tracker = s.tracker.state_dict() if s.tracker is not None else st.tracker
    st.elapsed = logger.elapsed()
    name, margs = build.model_spec(s.cfg)
    # "model" is what the run delivers (eval, encode, export read it): the weight average when there is one
    ckpt = {"model": s.eval_net.state_dict(), "model_class": name, "model_args": margs, "config": config_to_dict(s.cfg),
            "state": st.to_dict(), "rng": rng_state(), **s.opt.state_dicts(s.fabric)}
    if s.ema is not None:
        ckpt["train_model"] = s.net.state_dict()  # the trained weights themselves, for --resume
    if s.rank0:
        save_checkpoint(ckpt, path or rundir.checkpoints_dir(s.run_dir) / "last.ckpt")
    if path is None:
        s.saved_step = st.step
    s.fabric.barrier()
