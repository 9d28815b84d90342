"""The loop's records. ``TrainState``: the loop's position and bookkeeping, i.e. everything of a run that is checkpointed
besides the weights, optimiser, scheduler and RNG states.

Example:
    >>> s = TrainState(step=10, epoch=1, batch_in_epoch=4)
    >>> TrainState.from_dict(s.to_dict()) == s
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

__all__ = ["TrainState", "TrainResult", "Hooks", "Session"]


@dataclass
class TrainState:
    """Where a run is and what it has kept.

    Attributes:
        step: optimiser steps taken. Default 0.
        epoch: current epoch. Default 0.
        batch_in_epoch: micro-batches of this epoch already consumed (exact resume). Default 0.
        best: ``[[val recon_loss, file name], ...]`` of the kept best checkpoints, ascending. Default [].
        nonfinite_steps: steps skipped so far because the loss or gradient was not finite. Default 0.
        tracker: ``state_dict`` of the code-usage tracker (None for models without codes). Default None.
        elapsed: seconds of training before this process started (resumed runs). Default 0.0.
        weight_ema_updates: updates folded into the weight average so far (``train.weight_ema``). Default 0.
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best: list[list] = field(default_factory=list)
    nonfinite_steps: int = 0
    tracker: dict[str, Any] | None = None
    elapsed: float = 0.0
    weight_ema_updates: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain values and tensors only (checkpoints are loaded with ``weights_only=True``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        """Inverse of :meth:`to_dict`; unknown keys are ignored, missing ones take their defaults."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> TrainState:
        """The state of a checkpoint: its ``state`` entry, or the top-level keys of checkpoints written
        before ``TrainState`` existed (``step``, ``epoch``, ``batch_in_epoch``, ``best``, ...)."""
        return cls.from_dict(ckpt["state"] if "state" in ckpt else ckpt)


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
    signal: int | None = None  # the signal that stopped an interrupted run (exit code 128 + signal)


@dataclass
class Hooks:
    """Callbacks the caller gives the loop (so the loop imports no diagnostics).

    Attributes:
        on_validation: ``f(step, val_metrics)`` after each validation; may raise to stop. Default None.
        on_warning: ``f(records) -> list[str]``: new warning lines for the metrics so far (rank 0,
            at each validation). Default None.
        on_finish: ``f(records, run_dir) -> findings`` at the end of the run (rank 0, after the last
            checkpoint); the findings go to the trackers (``train.loggers``). Default None.
    """

    on_validation: Callable[[int, dict], None] | None = None
    on_warning: Callable[[list[dict]], list[str]] | None = None
    on_finish: Callable[[list[dict], Path], list] | None = None


@dataclass
class Session:
    """Everything :func:`setup` builds and the loop reads."""

    fabric: object
    cfg: Any  # ndvq.config.Config
    run_dir: Path
    net: torch.nn.Module  # the plain model (state dicts, eval, samples)
    opt: Any  # ndvq.run.optim.Optimisers
    objective: torch.nn.Module
    train_ds: object
    val_ds: object
    total: int
    steps_per_epoch: int
    intervals: tuple[int, int, int]  # validation, samples, checkpoint
    state: TrainState
    hooks: Hooks
    tracker: torch.nn.Module | None = None  # CodeUsageTracker
    bad_run: torch.Tensor | None = None  # consecutive non-finite steps (device)
    bad_total: torch.Tensor | None = None
    saved_step: int | None = None  # step of the newest intact last.ckpt (None: none written)
    ema: torch.nn.Module | None = None  # AveragedModel of net (train.weight_ema), or None

    @property
    def eval_net(self) -> torch.nn.Module:
        """The weights a run delivers: the weight average when ``train.weight_ema`` is set, else ``net``
        (validation, samples and every checkpoint's ``model`` use it)."""
        return self.net if self.ema is None else self.ema.module

    @property
    def rank0(self) -> bool:
        return self.fabric.global_rank == 0
