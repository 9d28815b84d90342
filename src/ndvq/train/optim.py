"""Optimisers and learning-rate schedules.

* Parameter groups: weights with decay, biases/norms without, and a gradient-updated codebook
  with its own ``quantizer.codebook_lr`` (no decay).
* The optimiser is fused AdamW where the device supports it, which lets a step be skipped on
  the device (no host sync) when the gradients are not finite: :func:`skip_if_nonfinite`.
* Schedules (``train.lr_schedule``), all with linear warm-up over ``warmup_steps``:
  ``constant``; ``cosine`` (to ``min_lr_ratio * lr`` at the last step); ``cyclic``
  (triangular between ``min_lr_ratio * lr`` and ``lr`` with period ``cycle_steps``).

Example:
    >>> import torch
    >>> f = lr_lambda("cosine", warmup_steps=10, total_steps=100, min_lr_ratio=0.1, cycle_steps=50)
    >>> round(f(0), 2), round(f(10), 2), round(f(100), 2)
    (0.1, 1.0, 0.1)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ndvq.builders import build_loss

__all__ = ["lr_lambda", "param_groups", "make_optimizer", "make_scheduler", "scaled_lr", "skip_if_nonfinite", "setup_extra_loss"]


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int, min_lr_ratio: float,
              cycle_steps: int) -> Callable[[int], float]:
    """The LR multiplier for step ``s`` (0-based count of optimiser steps taken).

    Args:
        schedule: ``"constant" | "cosine" | "cyclic"``.
        warmup_steps: linear warm-up from ``1/(warmup_steps+1)`` to 1.
        total_steps: last step (cosine reaches ``min_lr_ratio`` there).
        min_lr_ratio: floor of cosine/cyclic as a fraction of the base LR.
        cycle_steps: period of the cyclic schedule.
    """
    if schedule not in ("constant", "cosine", "cyclic"):
        raise ValueError(f"lr_schedule must be 'constant', 'cosine' or 'cyclic', got {schedule!r}")

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        t = step - warmup_steps
        if schedule == "constant":
            return 1.0
        if schedule == "cosine":
            progress = min(t / max(total_steps - warmup_steps, 1), 1.0)
            return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        phase = (t % cycle_steps) / cycle_steps  # cyclic: triangular, starting at the top
        return min_lr_ratio + (1 - min_lr_ratio) * abs(1 - 2 * phase)

    return f


def scaled_lr(lr: float, world_size: int, scale: bool) -> float:
    """Linear scaling rule: ``lr * world_size`` when ``scale`` (``train.scale_lr_by_world_size``)."""
    return lr * world_size if scale else lr


def param_groups(model: nn.Module, lr: float, weight_decay: float,
                 codebook_lr: float | None = None) -> list[dict]:
    """AdamW groups: decayed weights (ndim >= 2), undecayed biases/norm parameters, and the
    gradient-updated codebook (``model.codebook_parameters()``) at ``codebook_lr`` without decay."""
    codebook = list(model.codebook_parameters()) if hasattr(model, "codebook_parameters") else []
    cb_ids = {id(p) for p in codebook}
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad and id(p) not in cb_ids:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "lr": lr},
              {"params": no_decay, "weight_decay": 0.0, "lr": lr}]
    if codebook:
        groups.append({"params": codebook, "weight_decay": 0.0, "lr": codebook_lr or lr})
    return [g for g in groups if g["params"]]


def make_optimizer(groups: list[dict], lr: float, beta1: float, beta2: float,
                   device: torch.device | None = None) -> torch.optim.Optimizer:
    """AdamW over ``groups``; fused (device-side step skipping) when the device supports it."""
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=(beta1, beta2), fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr, betas=(beta1, beta2))


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, warmup_steps: int, total_steps: int,
                   min_lr_ratio: float, cycle_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` with :func:`lr_lambda` (stepped once per optimiser step)."""
    f = lr_lambda(schedule, warmup_steps, total_steps, min_lr_ratio, cycle_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, f)


def skip_if_nonfinite(optimizer: torch.optim.Optimizer, bad: torch.Tensor) -> bool:
    """Make the next ``optimizer.step()`` a no-op when ``bad`` (a 0-dim bool tensor) is True.

    With a fused optimiser this happens on the device through the ``found_inf`` input of the
    fused kernel (the same mechanism ``torch.amp.GradScaler`` uses): parameters, moments and the
    step count stay untouched, and no host sync is needed. Returns False when the optimiser is
    not fused; the caller must then check ``bad`` on the host.
    """
    if not optimizer.defaults.get("fused"):
        return False
    optimizer.found_inf = bad.detach().float().reshape(())
    return True


def setup_extra_loss(fabric, cfg, world: int, ckpt: dict | None):
    """The optional AutoencoderLoss; its discriminator gets its own AdamW, set up through Fabric."""
    loss_mod = build_loss(cfg)
    if loss_mod is None:
        return None, None, None
    loss_mod = fabric.to_device(loss_mod)
    if loss_mod.discriminator is None:
        return loss_mod, None, None
    lr = scaled_lr(cfg.loss.disc_learning_rate or cfg.train.learning_rate, world, cfg.train.scale_lr_by_world_size)
    d_opt = make_optimizer(param_groups(loss_mod.discriminator, lr, cfg.train.weight_decay), lr,
                           cfg.train.beta1, cfg.train.beta2)
    if ckpt is not None and "discriminator" in ckpt:
        loss_mod.discriminator.load_state_dict(ckpt["discriminator"])
    disc, disc_opt = fabric.setup(loss_mod.discriminator, d_opt)
    if ckpt is not None and "disc_optimizer" in ckpt:
        d_opt.load_state_dict(ckpt["disc_optimizer"])
    loss_mod.discriminator = disc  # both losses go through the (DDP-)wrapped discriminator
    return loss_mod, disc, disc_opt
