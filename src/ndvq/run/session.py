"""Setting a run up: data, model, objective, optimisers and the restored state (``setup``), and the
loaders whose order depends only on (seed, epoch) (``loader``), for :mod:`ndvq.run.train`.

Example:
    >>> from ndvq.run.session import setup      # doctest: +SKIP
    >>> session = setup(fabric, cfg, run_dir, resume=None, hooks=Hooks())      # doctest: +SKIP
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ndvq import build
from ndvq.config import Config, ConfigError, config_to_yaml
from ndvq.models.backbones.checkpointing import set_activation_checkpointing
from ndvq.models.monai import init_from
from ndvq.run import rundir
from ndvq.run.checkpoint import check_same_model, load_checkpoint, set_rng_state
from ndvq.run.codes import code_counts
from ndvq.run.infer import code_stats
from ndvq.run.optim import make_optimisers, weight_average
from ndvq.run.sampler import EpochSampler
from ndvq.run.signals import ignore_in_workers
from ndvq.run.state import Hooks, Session, TrainState

__all__ = ["resolve_run_dir", "setup", "loader", "batch_counts"]


def resolve_run_dir(cfg: Config, resume: str | Path | None, overwrite: bool = False) -> Path:
    """The run directory: the resumed one, or ``run.root/run.name`` (default name with a timestamp).

    Raises:
        ConfigError: ``run.name`` is not a plain name, or the directory already holds a run and neither
            ``resume`` nor ``overwrite`` is given (the message says which of the two applies).
    """
    if resume is not None:
        if overwrite:
            raise ConfigError("--overwrite starts a run afresh and cannot be combined with --resume")
        return rundir.run_dir_of(rundir.find_checkpoint(resume))
    name = rundir.check_run_name(cfg.run.name or None) or f"{cfg.model.kind}-{cfg.data.kind}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir = Path(cfg.run.root) / name
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run directory {str(run_dir)!r} is a file; choose another run.name")
    if rundir.metrics_path(run_dir).exists() and not overwrite:
        has_ckpt = (rundir.checkpoints_dir(run_dir) / "last.ckpt").is_file()
        how = f"continue it with --resume {run_dir}, " if has_ckpt else "it has no checkpoint to resume; "
        raise ConfigError(f"run directory {str(run_dir)!r} already holds a run; {how}start it afresh with "
                          f"--overwrite, or choose another run.name")
    return run_dir


def setup(fabric, cfg: Config, run_dir: Path, resume, hooks: Hooks) -> Session:
    """Data, model, objective, optimisers and state (restored from ``resume`` when given)."""
    t, rank0, world = cfg.train, fabric.global_rank == 0, fabric.world_size
    fabric.seed_everything(t.seed, verbose=False)
    ckpt = load_checkpoint(resume) if resume is not None else None
    if rank0:
        run_dir.mkdir(parents=True, exist_ok=True)  # series statistics are saved here
    stats = run_dir if rank0 else None
    train_ds = build.build_dataset(cfg, "train", stats)
    cfg = build.resolve_auto(cfg, train_ds)  # the val split reads items as the train split does
    val_ds = build.build_dataset(cfg, "val", stats)
    net = build.build_model(cfg)
    fitted = build.fit_items(cfg, train_ds, net.downsample) if ckpt is None else None
    if fitted is not None:  # a default window / patch that is mostly padding: the size that fits the items
        cfg, line = fitted
        train_ds, val_ds = build.build_dataset(cfg, "train", stats), build.build_dataset(cfg, "val", stats)
        train_ds.note(line)
    build.check_data_fits_model(cfg, train_ds, net)
    net.validate_inputs = False  # non-finite losses and gradients are caught on the device instead
    name, margs = build.model_spec(cfg)
    if ckpt is not None:
        check_same_model(ckpt, name, margs, resume)
        net.load_state_dict(ckpt.get("train_model", ckpt["model"]))  # "model" is the average when there is one
    elif cfg.run.init_from is not None:  # weights only: a pretrained folder or a MONAI checkpoint
        init_from(net, cfg.run.init_from)
    set_activation_checkpointing(net, t.activation_checkpointing)
    steps_per_epoch = len(EpochSampler(len(train_ds), 0, 0, 0, world)) // t.batch_size // t.grad_accum
    if steps_per_epoch == 0:
        raise ConfigError(f"the train split has {len(train_ds)} items, fewer than train.batch_size x grad_accum x "
                          f"devices = {t.batch_size * t.grad_accum * world}; lower train.batch_size")
    total = int(min(t.max_steps or math.inf, (t.num_epochs or math.inf) * steps_per_epoch))
    every = t.val_every_epochs and t.val_every_epochs * steps_per_epoch  # epoch-based intervals (medical config)
    intervals = (every, every, every) if every else (t.val_interval, t.sample_interval, t.ckpt_interval)
    objective = fabric.to_device(build.build_objective(cfg))
    objective.set_activation_checkpointing(t.activation_checkpointing)
    opt = make_optimisers(fabric, cfg, net, objective, ckpt, total=total)
    state = TrainState.from_checkpoint(ckpt) if ckpt is not None else TrainState()
    if ckpt is not None:
        set_rng_state(ckpt["rng"])
    if rank0:  # after the checks: a refused resume leaves the run's files untouched
        rundir.config_path(run_dir).write_text(config_to_yaml(cfg))
        rundir.write_model_facts(run_dir, build.model_facts(cfg, net, tuple(train_ds[0]["data"].shape[1:])))
    s = Session(fabric, cfg, run_dir, net, opt, objective, train_ds, val_ds, total, steps_per_epoch, intervals,
                state, hooks)
    s.bad_run, s.bad_total = (torch.tensor(float(v), device=fabric.device) for v in (0, state.nonfinite_steps))
    s.saved_step = state.step if ckpt is not None else None
    s.ema = weight_average(net, t.weight_ema, ckpt)  # after fabric.setup: on the model's device
    return s


def loader(s: Session, epoch: int, skip: int = 0, train: bool = True) -> DataLoader:
    """A DataLoader whose order (and worker seeds) depend only on (seed, epoch): exact resume."""
    t, f = s.cfg.train, s.fabric
    ds = s.train_ds if train else s.val_ds
    if getattr(ds, "streaming", False):  # data.shards: the stream is split and replayed by the dataset
        return ds.loader(epoch=epoch, batch_size=t.batch_size, seed=t.seed, rank=f.global_rank,
                         world_size=f.world_size, num_workers=t.num_workers, skip=skip, train=train,
                         worker_init_fn=ignore_in_workers if t.num_workers else None)
    sampler = EpochSampler(len(ds), t.seed, epoch, f.global_rank, f.world_size, shuffle=train,
                           skip=skip * t.batch_size, pad=train)
    return DataLoader(ds, batch_size=t.batch_size, sampler=sampler, drop_last=train, num_workers=t.num_workers,
                      generator=torch.Generator().manual_seed(t.seed + epoch), pin_memory=torch.cuda.is_available(),
                      worker_init_fn=ignore_in_workers if t.num_workers else None)


def batch_counts(net: torch.nn.Module, out, batch: dict) -> torch.Tensor | None:
    """Per-code counts ``[G, K]`` of a batch; code positions wholly inside padding are excluded when the
    items carry ``valid``. None for a model without codes."""
    if batch.get("valid") is None or getattr(out, "indices", None) is None:
        return code_counts(out)
    net = getattr(net, "module", net)
    return code_stats(net, out.indices, batch["data"].shape, batch["valid"])[0].to(batch["data"].device)
