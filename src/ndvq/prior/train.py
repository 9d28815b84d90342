"""``ndvq prior RUN``: train the code prior of a run, with the training engine's parts.

The run's train/val splits are encoded once with the frozen autoencoder (``ndvq.run.checkpoint.load_model``
and ``ndvq.build``), tiles are cropped from the codes (:mod:`ndvq.prior.data`), and the prior trains under
Lightning Fabric with the engine's run lock, signals (SIGINT/SIGTERM save ``checkpoints/last.ckpt`` and stop),
``metrics.jsonl`` (train and val ``nll_bits``, records like the main loop's) and progress output. All of it
lives in ``RUN/prior/``; a finished prior is exported there as ``config.json`` + ``model.safetensors``.
Starting again continues ``checkpoints/last.ckpt`` exactly (same batches, learning rates and RNG), unless
``overwrite``.

Example:
    >>> result = train_prior("runs/my-run", overrides=["max_steps=200"])     # doctest: +SKIP
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ndvq import build
from ndvq.errors import CheckpointError, ConfigError
from ndvq.prior.config import PriorConfig, load_prior_config, prior_overrides, validate_prior_config
from ndvq.prior.data import TileSampler, encode_split, step_generator
from ndvq.prior.layout import layout_for
from ndvq.prior.model import CodePrior, TileMeta, bits, nll_of
from ndvq.prior.store import build_prior, prior_dir, save_prior
from ndvq.prior.tokens import num_threads
from ndvq.run import rundir
from ndvq.run.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from ndvq.run.progress import MetricsLogger, Progress
from ndvq.run.signals import StopFlag

__all__ = ["train_prior", "PriorResult", "load_codes_model", "prior_facts", "fixed_bits"]

_ARCH = ("d_model", "n_layers", "n_heads", "mlp_ratio", "block", "seed", "max_items")


@dataclass
class PriorResult:
    """What :func:`train_prior` returns."""

    prior_dir: Path
    step: int
    stopped: str  # "finished" | "interrupted"
    last_train: dict = field(default_factory=dict)
    last_val: dict = field(default_factory=dict)
    signal: int | None = None


def load_codes_model(run_dir: str | Path):
    """The run's frozen autoencoder (:class:`~ndvq.run.checkpoint.LoadedModel`, on the CPU), refusing runs
    without a config or without discrete codes (one-line :class:`CheckpointError`)."""
    from ndvq.run.checkpoint import load_model

    p = Path(run_dir)
    if not p.is_dir():
        raise CheckpointError(f"run folder {str(p)!r} does not exist")
    loaded = load_model(p)
    if loaded.config is None:
        raise CheckpointError(f"{str(p)!r} is a pretrained folder; pass a run directory written by ndvq train")
    if not loaded.model.codebook_sizes:
        raise CheckpointError(f"{str(p)!r} holds a {type(loaded.model).__name__} without discrete codes (a KL-VAE); "
                              "a code prior needs a VQ model")
    for prm in loaded.model.parameters():
        prm.requires_grad_(False)
    return loaded


def prior_facts(model, item_spatial: tuple[int, ...], cfg: PriorConfig) -> tuple[dict, TileSampler | None]:
    """The ``config.json`` facts of a prior for ``model`` trained on items of ``item_spatial``: its config with
    the resolved ``block``, ``codebook_sizes``, ``n_grids``, ``max_coords`` and ``item_spatial``."""
    n = len(model.latent_shape(tuple(item_spatial)))
    if cfg.block is not None and len(cfg.block) != n:
        raise ConfigError(f"prior block={cfg.block} needs {n} entries (the latent has {n} axes)")
    layout = layout_for(model, tuple(item_spatial), tuple(cfg.block) if cfg.block else None)
    first = layout.tiles[0]
    max_coords = [int(first.coords[:, a].max()) + 1 for a in range(n)]
    prior_cfg = cfg.model_dump(mode="json") | {"block": list(layout.block)}
    facts = {"prior": prior_cfg, "block": list(layout.block), "codebook_sizes": list(model.codebook_sizes),
             "n_grids": len(layout.grid_shapes), "max_coords": max_coords, "item_spatial": list(item_spatial),
             "tile_length": first.length}
    return facts, layout


def _datasets(loaded, cfg: PriorConfig):
    """(train sampler, val sampler or None, facts) from the run's own data config."""
    run_cfg, model = loaded.config, loaded.model
    torch.manual_seed(cfg.seed)  # datasets that draw crops get the same items in every process
    train_ds = build.build_dataset(run_cfg, "train", stats_dir=loaded.run_dir)
    val_ds = build.build_dataset(run_cfg, "val", stats_dir=loaded.run_dir)
    item_spatial = tuple(train_ds[0]["data"].shape[1:])
    facts, layout = prior_facts(model, item_spatial, cfg)
    train = TileSampler(encode_split(model, train_ds, cfg.max_items), layout)
    val = TileSampler(encode_split(model, val_ds, cfg.max_items), layout) if len(val_ds) else None
    return train, val, facts


def _resolve_config(out: Path, config_path, overrides, overwrite: bool) -> tuple[PriorConfig, dict | None]:
    """The config and the checkpoint to continue (None: a fresh start). A continued prior starts from its saved
    config (or ``config_path``) with ``overrides`` on top; a changed architecture, block or seed is refused."""
    last = rundir.checkpoints_dir(out) / "last.ckpt"
    if overwrite or not last.is_file():
        return load_prior_config(config_path, list(overrides)), None
    ckpt = load_checkpoint(last)
    saved = validate_prior_config(ckpt["config"])
    base = load_prior_config(config_path).model_dump() if config_path is not None else saved.model_dump()
    cfg = validate_prior_config(base | prior_overrides(overrides))
    for k in _ARCH:
        if getattr(cfg, k) != getattr(saved, k):
            raise ConfigError(f"{last} was trained with {k}={getattr(saved, k)!r} but now {k}={getattr(cfg, k)!r}; "
                              f"drop that change to continue it, or start afresh with --overwrite")
    return cfg, ckpt


def train_prior(run_dir: str | Path, config_path: str | Path | None = None, overrides: list[str] = (),
                overwrite: bool = False, on_log: Callable[[int, dict], None] | None = None) -> PriorResult:
    """Train (or continue) the prior of ``run_dir`` and export it to ``RUN/prior`` when it finishes.

    Args:
        run_dir: a run directory of a VQ model (``ndvq train`` output).
        config_path: prior config file (``configs/prior.yaml`` keys). Default None (defaults).
        overrides: ``key=value`` prior overrides.
        overwrite: start afresh even if ``RUN/prior`` holds a checkpoint. Default False (continue it).
        on_log: ``f(step, record)`` after each logged train record (tests; may send a signal). Default None.
    """
    loaded = load_codes_model(run_dir)
    out = prior_dir(loaded.run_dir)
    lock = rundir.RunLock(out).acquire()
    try:
        cfg, ckpt = _resolve_config(out, config_path, overrides, overwrite)  # a bad config leaves RUN/prior intact
        n = loaded.model.n_dims
        if cfg.block is not None and len(cfg.block) != n:
            raise ConfigError(f"prior block={cfg.block} needs {n} entries (the latent has {n} axes)")
        if overwrite:
            _clear(out)
        rundir.remove_temp_files(out)
        with StopFlag() as stop, num_threads(cfg.threads):
            return _run(loaded, out, cfg, ckpt, stop, on_log)
    finally:
        lock.release()


def _clear(out: Path) -> None:
    for p in out.iterdir():
        if p.name != rundir.lock_path(out).name:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def _lr_lambda(cfg: PriorConfig) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = (step - cfg.warmup_steps) / max(cfg.max_steps - cfg.warmup_steps, 1)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    return f


def _restore(ckpt: dict, prior: CodePrior, opt, sched, cfg: PriorConfig) -> tuple[int, float]:
    """Load a checkpoint's weights, optimiser, schedule and RNG; returns ``(step, elapsed seconds)``."""
    prior.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    for g in opt.param_groups:  # a changed max_steps: the schedule follows the new config
        g["initial_lr"] = cfg.learning_rate
    sched.lr_lambdas = [_lr_lambda(cfg)]
    set_rng_state(ckpt["rng"])
    return int(ckpt["state"]["step"]), float(ckpt["state"]["elapsed"])


def _train_step(fabric, model, opt, sched, tokens: torch.Tensor, meta: TileMeta, grad_clip: float) -> float:
    """One optimiser step on ``tokens [B, T]``; returns the loss in nats per code."""
    model.train()
    loss = nll_of(model(tokens, meta), tokens)
    opt.zero_grad(set_to_none=True)
    fabric.backward(loss)
    if grad_clip:
        fabric.clip_gradients(model, opt, max_norm=grad_clip)
    opt.step()
    sched.step()
    return loss.item()


def _run(loaded, out: Path, cfg: PriorConfig, ckpt: dict | None, stop: StopFlag, on_log) -> PriorResult:
    from lightning_fabric import Fabric

    fabric = Fabric(accelerator="cpu", devices=1, precision="32-true")
    train, val, facts = _datasets(loaded, cfg)
    torch.manual_seed(cfg.seed)
    prior = build_prior(facts)
    opt = torch.optim.AdamW(prior.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                            betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    step, elapsed = _restore(ckpt, prior, opt, sched, cfg) if ckpt is not None else (0, 0.0)
    model, opt = fabric.setup(prior, opt)
    meta = TileMeta.of(train.tile, fabric.device)
    val_tiles = val.fixed(cfg.seed + 1, cfg.val_tiles) if val is not None else None
    print(_start_text(out, prior, train, val, facts, cfg, step), flush=True)
    logger = MetricsLogger(out, resume_step=step if ckpt is not None else None, elapsed=elapsed, tensorboard=False)
    acc, n_acc, t_last, last_train, last_val = 0.0, 0, time.time(), {}, {}
    with logger, Progress(cfg.max_steps, initial=step) as progress:
        while step < cfg.max_steps and not stop.requested:
            tokens = fabric.to_device(train.batch(step_generator(cfg.seed, step), cfg.batch_size).long())
            acc, n_acc, step = acc + _train_step(fabric, model, opt, sched, tokens, meta, cfg.grad_clip), n_acc + 1, step + 1
            progress.update()
            if step % cfg.log_interval == 0 or step >= cfg.max_steps:
                rate = n_acc * cfg.batch_size / max(time.time() - t_last, 1e-9)
                last_train = logger.log({"loss": acc / n_acc, "nll_bits": bits(acc / n_acc), "lr": sched.get_last_lr()[0],
                                         "samples_per_sec": rate}, step, 0, "train")
                acc, n_acc, t_last = 0.0, 0, time.time()
                progress.show(last_train)
                if on_log is not None:
                    on_log(step, last_train)
            if val_tiles is not None and (step % cfg.val_interval == 0 or step >= cfg.max_steps):
                last_val = logger.log(_validate(prior, val_tiles, meta, cfg.batch_size, fabric), step, 0, "val")
            stop.poll(fabric, True)
            if step % cfg.ckpt_interval == 0 or step >= cfg.max_steps or stop.requested:
                _save(out, prior, opt, sched, cfg, facts, step, logger.elapsed())
        if step >= cfg.max_steps:
            save_prior(out.parent, facts, prior)
    stopped = "interrupted" if stop.requested else "finished"
    print(f"ndvq prior: {stopped} after {step} steps in {logger.elapsed():.0f} s; "
          + (f"val nll_bits={last_val['nll_bits']:.4g} per code (fixed length {fixed_bits(train.tile):.4g}); "
             if last_val else "") + f"saved in {out}", flush=True)
    return PriorResult(out, step, stopped, last_train, last_val, int(stop.signum) if stop.requested else None)


def fixed_bits(tile) -> float:
    """Mean fixed-length bits per code of a tile: ``log2`` of each token's own codebook size."""
    return float(torch.as_tensor(tile.vocab).double().log2().mean())


@torch.no_grad()
def _validate(prior: CodePrior, tiles: torch.Tensor, meta: TileMeta, batch: int, fabric) -> dict:
    """Mean NLL over the fixed validation tiles (nats ``loss`` and ``nll_bits`` per code)."""
    prior.eval()
    total = 0.0
    for start in range(0, len(tiles), batch):
        chunk = fabric.to_device(tiles[start:start + batch].long())
        total += nll_of(prior(chunk, meta), chunk).item() * len(chunk)
    prior.train()
    nats = total / len(tiles)
    return {"loss": nats, "nll_bits": bits(nats)}


def _save(out: Path, prior, opt, sched, cfg: PriorConfig, facts: dict, step: int, elapsed: float) -> None:
    save_checkpoint({"model": prior.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "config": cfg.model_dump(mode="json"), "facts": facts,
                     "state": {"step": step, "elapsed": elapsed}, "rng": rng_state()},
                    rundir.checkpoints_dir(out) / "last.ckpt")


def _start_text(out: Path, prior: CodePrior, train: TileSampler, val, facts: dict, cfg: PriorConfig, step: int) -> str:
    how = f"continuing at step {step}" if step else "from scratch"
    return "\n".join([
        f"ndvq prior: {prior.n_parameters() / 1e6:.2f} M parameters, {cfg.max_steps} steps ({how}), "
        f"tiles of {facts['block']} positions = {train.tile.length} codes",
        f"  prior dir    {out}",
        f"  codes        train {len(train)} item(s), val {len(val) if val is not None else 0} item(s); "
        f"fixed length {fixed_bits(train.tile):.3g} bits per code"])
