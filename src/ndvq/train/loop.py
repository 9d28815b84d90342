"""The training loop: setup, loop, eval, checkpoint - in that order, readable in one sitting.

Lightning Fabric owns devices, DDP (gloo on CPU, NCCL on GPU), precision and launching; everything
else is plain PyTorch below. Rank 0 alone writes the run directory (docs/design.md).

Host syncs happen only at log / validation / checkpoint steps: step scalars are accumulated on the
device, and a step with non-finite gradients is skipped on the device (fused AdamW ``found_inf``).

Example:
    >>> from ndvq.config import load_config
    >>> from ndvq.train.loop import train
    >>> result = train(load_config(None, ["train.max_steps=2"]))      # doctest: +SKIP
    >>> result.run_dir                                                 # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ndvq import builders
from ndvq.config import Config, ConfigError, config_to_dict, config_to_yaml
from ndvq.diagnostics.metrics import psnr
from ndvq.train.checkpoint import (
    EpochSampler,
    StopFlag,
    find_checkpoint,
    load_checkpoint,
    load_model_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
    update_best,
)
from ndvq.train.logging import (
    MetricsLogger,
    Progress,
    print_doctor_findings,
    start_text,
    summary_text,
    write_recon_samples,
)
from ndvq.train.optim import (
    make_optimizer,
    make_scheduler,
    param_groups,
    scaled_lr,
    setup_extra_loss,
    skip_if_nonfinite,
)

__all__ = ["train", "TrainResult", "NonFiniteLossError", "resolve_run_dir"]


@dataclass
class TrainResult:
    """What :func:`train` returns (rank 0's view)."""

    run_dir: Path
    step: int
    epoch: int
    stopped: str  # "finished" | "interrupted"
    best_val_loss: float | None = None
    last_train: dict = field(default_factory=dict)
    last_val: dict = field(default_factory=dict)


class NonFiniteLossError(RuntimeError):
    """Raised after ``train.max_nonfinite_steps`` consecutive steps with a non-finite loss/gradient."""


def resolve_run_dir(cfg: Config, resume: str | Path | None) -> Path:
    """The run directory: the resumed one, or ``run.root/run.name`` (default name with a timestamp)."""
    if resume is not None:
        ckpt = find_checkpoint(resume)
        return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    name = cfg.run.name or f"{cfg.model.kind}-{cfg.data.kind}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir = Path(cfg.run.root) / name
    if (run_dir / "metrics.jsonl").exists():
        raise ConfigError(f"run directory {str(run_dir)!r} already holds a run; continue it with "
                          f"--resume {run_dir} or choose another run.name")
    return run_dir


def train(cfg: Config, resume: str | Path | None = None, on_validation=None) -> TrainResult:
    """Train ``cfg`` (or continue the run ``resume``) and return rank 0's :class:`TrainResult`.

    Args:
        cfg: validated config.
        resume: a run directory or checkpoint to continue exactly. Default None.
        on_validation: ``f(step, val_metrics)`` called after each validation (may raise to stop).
    """
    from lightning_fabric import Fabric

    resume = resume if resume is not None else cfg.run.resume
    run_dir = resolve_run_dir(cfg, resume)
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
    if strategy.endswith("spawn"):
        return fabric.launch(_run, cfg, run_dir, resume, on_validation)
    fabric.launch()
    return _run(fabric, cfg, run_dir, resume, on_validation)


def _loader(ds, cfg: Config, epoch: int, rank: int, world: int, skip: int = 0, train: bool = True):
    """A DataLoader whose order (and worker seeds) depend only on (seed, epoch): exact resume."""
    t = cfg.train
    sampler = EpochSampler(len(ds), t.seed, epoch, rank, world, shuffle=train, skip=skip * t.batch_size, pad=train)
    return DataLoader(ds, batch_size=t.batch_size, sampler=sampler, drop_last=train, num_workers=t.num_workers,
                      generator=torch.Generator().manual_seed(t.seed + epoch), pin_memory=torch.cuda.is_available())


def _run(fabric, cfg: Config, run_dir: Path, resume, on_validation) -> TrainResult:
    # ------------------------------------------------------------------ setup
    t, rank0, world = cfg.train, fabric.global_rank == 0, fabric.world_size
    fabric.seed_everything(t.seed, verbose=False)
    ckpt = load_checkpoint(resume) if resume is not None else None
    if rank0:
        run_dir.mkdir(parents=True, exist_ok=True)  # series statistics are saved here
    train_ds = builders.build_dataset(cfg, "train", stats_dir=run_dir if rank0 else None)
    val_ds = builders.build_dataset(cfg, "val", stats_dir=run_dir if rank0 else None)
    builders.check_data_matches_model(cfg, train_ds)
    steps_per_epoch = len(EpochSampler(len(train_ds), 0, 0, 0, world)) // t.batch_size // t.grad_accum
    if steps_per_epoch == 0:
        raise ConfigError(f"the train split has {len(train_ds)} items, fewer than train.batch_size x grad_accum x "
                          f"devices = {t.batch_size * t.grad_accum * world}; lower train.batch_size")
    total = int(min(t.max_steps or math.inf, (t.num_epochs or math.inf) * steps_per_epoch))
    every = t.val_every_epochs and t.val_every_epochs * steps_per_epoch  # epoch-based intervals (medical config)
    val_iv, sample_iv, ckpt_iv = (every, every, every) if every else (t.val_interval, t.sample_interval, t.ckpt_interval)

    net, model_class, margs = builders.build_model(cfg)
    if hasattr(net, "validate_inputs"):  # its per-batch NaN check of the input is a host sync every step;
        net.validate_inputs = False      # non-finite losses and gradients are caught below instead
    if ckpt is not None:
        load_model_state(net, ckpt, model_class, margs, resume)
    if rank0:  # after the checks: a refused resume leaves the run's config.yaml untouched
        (run_dir / "config.yaml").write_text(config_to_yaml(cfg))
    lr = scaled_lr(t.learning_rate, world, t.scale_lr_by_world_size)
    cb_lr = cfg.model.quantizer.codebook_lr and scaled_lr(cfg.model.quantizer.codebook_lr, world, t.scale_lr_by_world_size)
    opt = make_optimizer(param_groups(net, lr, t.weight_decay, cb_lr), lr, t.beta1, t.beta2)
    model, optimizer = fabric.setup(torch.compile(net) if t.compile else net, opt)  # net: the plain module
    scheduler = make_scheduler(opt, t.lr_schedule, t.warmup_steps, total, t.min_lr_ratio, t.cycle_steps)
    loss_mod, disc, disc_opt = setup_extra_loss(fabric, cfg, world, ckpt)

    step = epoch = batch_in_epoch = 0
    best: list[list] = []
    tracker, tracker_state, nonfinite_total = None, None, 0
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        step, epoch, batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
        best, tracker_state, nonfinite_total = ckpt.get("best", []), ckpt.get("tracker"), ckpt.get("nonfinite_steps", 0)
        fabric.strategy.precision.load_state_dict(ckpt.get("precision") or {})  # AMP grad-scaler state
        set_rng_state(ckpt["rng"])
        del ckpt

    if rank0:
        print(start_text(run_dir, {"train": train_ds, "val": val_ds}, net, model_class, total, steps_per_epoch,
                         world, device=fabric.device, precision=t.precision), flush=True)
    logger = MetricsLogger(run_dir, enabled=rank0)
    progress = Progress(total, initial=step, enabled=rank0)
    stop = StopFlag()
    device = fabric.device
    acc: dict[str, torch.Tensor] = {}
    n_acc, t_last, bad_total, bad_run = 0, time.time(), torch.zeros((), device=device), torch.zeros((), device=device)
    bad_total += nonfinite_total
    last_train: dict = {}
    last_val: dict = {}
    stopped, doctor_seen = "finished", set()

    def save(path=None):
        state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": scheduler.state_dict(),
                 "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "rng": rng_state(),
                 "config": config_to_dict(cfg), "model_class": model_class, "model_args": margs,
                 "tracker": tracker.state_dict() if tracker not in (None, False) else None, "best": best,
                 "nonfinite_steps": int(bad_total.item()), "precision": fabric.strategy.precision.state_dict()}
        if disc is not None:
            state.update(discriminator=disc.module.state_dict(), disc_optimizer=disc_opt.optimizer.state_dict())
        if rank0:
            save_checkpoint(state, path or run_dir / "checkpoints" / "last.ckpt")
        fabric.barrier()

    # ------------------------------------------------------------------ loop
    with stop, logger, progress:  # closed (TensorBoard flushed) however the loop ends
        while step < total and not stop.requested:
            loader = iter(_loader(train_ds, cfg, epoch, fabric.global_rank, world, skip=batch_in_epoch))
            for _ in range(steps_per_epoch - batch_in_epoch // t.grad_accum):
                model.train()
                micro = [fabric.to_device(next(loader)) for _ in range(t.grad_accum)]
                scalars, counts, bad = _train_step(fabric, model, optimizer, opt, micro, loss_mod, disc, disc_opt,
                                                   epoch, t.grad_clip)
                scheduler.step()
                step, batch_in_epoch = step + 1, batch_in_epoch + t.grad_accum
                bad_total += bad
                bad_run = (bad_run + bad) * bad  # consecutive non-finite steps
                if counts is not None and tracker is not False:
                    if tracker is None:  # shaped by the first output's counts [G, K]
                        tracker = builders.build_tracker(counts, t.usage_window) or False
                        if tracker is not False and tracker_state is not None:
                            tracker.load_state_dict(tracker_state)
                    if tracker is not False:
                        tracker.update(counts)
                for k, v in scalars.items():
                    acc[k] = acc[k] + v if k in acc else v.clone()
                n_acc += 1
                progress.update()

                if step % min(t.log_interval, t.max_nonfinite_steps) == 0 and bad_run.item() >= t.max_nonfinite_steps:
                    raise NonFiniteLossError(
                        f"stopped at step {step}: {t.max_nonfinite_steps} consecutive steps with a non-finite loss or "
                        f"gradient; last good checkpoint: {run_dir / 'checkpoints' / 'last.ckpt'}. Lower "
                        f"train.learning_rate, set train.grad_clip, or use train.precision=32")
                if step % t.log_interval == 0 or step >= total:
                    rec = _log_train(fabric, logger, acc, n_acc, tracker, opt, step, epoch, t_last, t.batch_size * world * t.grad_accum,
                                     bad_total, len(getattr(train_ds, "skipped", None) or []))
                    if rec.get("nonfinite_steps", 0) > last_train.get("nonfinite_steps", nonfinite_total):
                        progress.write(f"warning: {int(rec['nonfinite_steps'])} step(s) skipped so far because the "
                                       f"loss or gradient was not finite (step {step})")
                    last_train, acc, n_acc, t_last = rec, {}, 0, time.time()
                    progress.show(rec)

                # -------------------------------------------------------- eval
                if step % val_iv == 0 or step >= total:
                    last_val = _validate(fabric, net, loss_mod, val_ds, cfg, epoch)
                    rec = logger.log(last_val, step, epoch, "val")
                    best, best_path = update_best(best, last_val["recon_loss"], step, run_dir / "checkpoints",
                                                   t.keep_checkpoints, delete=rank0)
                    if best_path is not None and bad_run.item() == 0:
                        save(best_path)
                    if rank0 and t.doctor_warnings:
                        print_doctor_findings(logger.records, config_to_dict(cfg), progress, doctor_seen)
                    if on_validation is not None:
                        on_validation(step, last_val)
                if rank0 and step % sample_iv == 0:
                    write_recon_samples(fabric, net, val_ds, run_dir / "samples" / f"step{step:07d}")

                # -------------------------------------------------------- checkpoint
                stop.poll(fabric, step % t.log_interval == 0)
                if step % ckpt_iv == 0 or step >= total or stop.requested:
                    if bad_run.item() == 0:  # never overwrite the last good checkpoint with a diverging state
                        save()
                if step >= total or stop.requested:
                    break
            else:
                epoch, batch_in_epoch = epoch + 1, 0

    if stop.requested:
        stopped = "interrupted"
    best_val = best[0][0] if best else None
    if rank0:
        print(summary_text(run_dir, logger.records, best, time.time() - logger.t0, step, stopped), flush=True)
    return TrainResult(run_dir, step, epoch, stopped, best_val, last_train, last_val)


def _train_step(fabric, model, optimizer, opt, micro, loss_mod, disc, disc_opt, epoch, grad_clip):
    """One optimiser step over ``grad_accum`` micro-batches; returns device scalars, counts, bad flag."""
    scalars: dict[str, torch.Tensor] = {}
    counts, recons = None, []
    for i, batch in enumerate(micro):
        x = batch["data"]
        with fabric.no_backward_sync(model, enabled=i < len(micro) - 1):
            out = model(x)
            loss = out.loss
            s = dict(out.scalars())
            if loss_mod is not None:
                g_loss, g_s = loss_mod.generator_loss(x, out.reconstruction, epoch)
                loss = loss + g_loss
                s.update(g_s)
                s["loss"] = loss.detach()
            fabric.backward(loss / len(micro))
        for k, v in s.items():
            v = v.detach().float() / len(micro)
            scalars[k] = scalars[k] + v if k in scalars else v
        c = builders.counts_of(out)
        if c is not None:
            counts = c if counts is None else counts + c
        recons.append((x, out.reconstruction.detach()))
    bad = _clip_and_step(fabric, model, optimizer, opt, grad_clip, scalars.get("loss"))
    if disc is not None and epoch >= loss_mod.warmup_epochs:
        disc_opt.zero_grad(set_to_none=True)  # drop the grads the generator loss left in the discriminator
        for x, recon in recons:
            d_loss, d_s = loss_mod.discriminator_loss(x, recon, epoch)
            fabric.backward(d_loss / len(recons))
            scalars.update({k: v.detach().float() for k, v in d_s.items()})
        _clip_and_step(fabric, disc, disc_opt, disc_opt.optimizer, grad_clip, None)
    return scalars, counts, bad


def _clip_and_step(fabric, model, optimizer, opt, grad_clip, loss):
    """Clip, skip on the device when not finite, step, zero grads; returns the 0/1 'bad' tensor."""
    if grad_clip is not None:
        norm = fabric.clip_gradients(model, optimizer, max_norm=grad_clip, error_if_nonfinite=False)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    bad = ~torch.isfinite(norm)
    if loss is not None:
        bad = bad | ~torch.isfinite(loss)
    bad = bad.float()
    if fabric.world_size > 1:  # every rank must agree on skipping
        bad = (fabric.all_reduce(bad, reduce_op="sum") > 0).float()
    if skip_if_nonfinite(opt, bad > 0) or bad.item() == 0:  # non-fused optimisers need the host check
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return bad


def _log_train(fabric, logger, acc, n_acc, tracker, opt, step, epoch, t_last, samples_per_step, bad_total, skipped):
    """Average the accumulated scalars over ranks and steps (one host sync) and log them."""
    names = sorted(acc)
    vals = [acc[k] / max(n_acc, 1) for k in names]
    if tracker not in (None, False):
        names += ["window_usage", "dead_codes"]
        vals += [tracker.window_usage().float(), tracker.dead_codes().float()]
    names.append("nonfinite_steps")
    vals.append(bad_total.float())
    stacked = torch.stack([v.reshape(()).to(bad_total.device) for v in vals])
    if fabric.world_size > 1:
        stacked = fabric.all_reduce(stacked, reduce_op="mean")
    rec = dict(zip(names, stacked.tolist()))
    rec.update(lr=opt.param_groups[0]["lr"], samples_per_sec=n_acc * samples_per_step / max(time.time() - t_last, 1e-9),
               skipped_files=skipped)
    return logger.log(rec, step, epoch, "train")


@torch.no_grad()
def _validate(fabric, net, loss_mod, ds, cfg: Config, epoch: int) -> dict[str, float]:
    """Mean validation scalars over ``train.val_batches`` batches of each rank's shard, reduced over ranks."""
    net.eval()
    sums: dict[str, torch.Tensor] = {}
    counts, n = None, 0
    data_range = getattr(ds, "data_range", None)
    for i, batch in enumerate(_loader(ds, cfg, 0, fabric.global_rank, fabric.world_size, train=False)):
        if cfg.train.val_batches is not None and i >= cfg.train.val_batches:
            break
        x = fabric.to_device(batch["data"])
        with fabric.autocast():
            out = net(x)
        s = {k: v.detach().float() * len(x) for k, v in out.scalars().items() if k not in ("perplexity", "usage")}
        s["psnr"] = psnr(x.float(), out.reconstruction.float(), data_range).sum()
        for k, v in s.items():
            sums[k] = sums[k] + v if k in sums else v
        c = builders.counts_of(out)
        if c is not None:
            counts = c if counts is None else counts + c
        n += len(x)
    names = sorted(sums)
    stacked = torch.stack([sums[k] for k in names] + [torch.tensor(float(n), device=fabric.device)])
    if fabric.world_size > 1:
        stacked = fabric.all_reduce(stacked, reduce_op="sum")
        counts = fabric.all_reduce(counts, reduce_op="sum") if counts is not None else None
    vals = stacked.tolist()
    out = {k: v / max(vals[-1], 1) for k, v in zip(names, vals[:-1])}
    if counts is not None:
        from ndvq.quantizers.base import usage_from_counts

        ppl, usage = usage_from_counts(counts)
        out.update(perplexity=float(ppl), usage=float(usage))
    net.train()
    return out
