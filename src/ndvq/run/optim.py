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
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["lr_lambda", "param_groups", "make_optimizer", "make_scheduler", "scaled_lr", "skip_if_nonfinite",
           "Optimisers", "make_optimisers", "weight_average"]


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


@dataclass
class Optimisers:
    """The Fabric-wrapped model and its optimiser, the LR schedule, and the optional discriminator with its own.

    Attributes:
        model: the model as set up by Fabric (DDP / compiled); call it for training steps.
        optimizer: the Fabric-wrapped optimiser of ``model``.
        raw: the plain ``torch.optim`` optimiser (state dicts, device-side step skipping).
        scheduler: the ``LambdaLR`` stepped once per optimiser step.
        disc: the Fabric-wrapped discriminator, or None.
        disc_optimizer: its Fabric-wrapped optimiser, or None.
    """

    model: nn.Module
    optimizer: Any
    raw: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    disc: nn.Module | None = None
    disc_optimizer: Any = None

    def step_model(self, fabric, grad_clip: float | None, loss: torch.Tensor | None) -> torch.Tensor:
        """Clip, skip on the device when not finite, step, zero grads; returns the 0/1 "bad" tensor."""
        return _clip_and_step(fabric, (self.model, self.optimizer, self.raw), grad_clip, loss)

    def step_discriminator(self, fabric, objective, pairs: list, when: tuple[int, int], grad_clip: float | None) -> dict:
        """One discriminator step on ``[(x, reconstruction), ...]`` at ``when = (epoch, step)``; returns its
        detached scalars."""
        self.disc_optimizer.zero_grad(set_to_none=True)  # drop the grads the generator loss left behind
        scalars: dict[str, torch.Tensor] = {}
        for x, recon in pairs:
            d_loss, d_s = objective.discriminator_loss(x, recon, *when)
            fabric.backward(d_loss / len(pairs))
            scalars.update({k: v.detach().float() for k, v in d_s.items()})
        _clip_and_step(fabric, (self.disc, self.disc_optimizer, self.disc_optimizer.optimizer), grad_clip, None)
        return scalars

    def state_dicts(self, fabric) -> dict[str, Any]:
        """The checkpoint entries of the optimisers, the schedule and the AMP scaler."""
        out = {"optimizer": self.raw.state_dict(), "scheduler": self.scheduler.state_dict(),
               "precision": fabric.strategy.precision.state_dict()}
        if self.disc is not None:
            out.update(discriminator=self.disc.module.state_dict(),
                       disc_optimizer=self.disc_optimizer.optimizer.state_dict())
        return out


def _clip_and_step(fabric, parts: tuple, grad_clip: float | None, loss: torch.Tensor | None) -> torch.Tensor:
    """``parts = (module, wrapped optimiser, raw optimiser)``: clip, skip when not finite, step, zero grads."""
    module, optimizer, raw = parts
    if grad_clip is not None:
        norm = fabric.clip_gradients(module, optimizer, max_norm=grad_clip, error_if_nonfinite=False)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in module.parameters() if p.grad is not None])
    bad = ~torch.isfinite(norm)
    if loss is not None:
        bad = bad | ~torch.isfinite(loss)
    bad = bad.float()
    if fabric.world_size > 1:  # every rank must agree on skipping
        bad = (fabric.all_reduce(bad, reduce_op="sum") > 0).float()
    if skip_if_nonfinite(raw, bad > 0) or bad.item() == 0:  # non-fused optimisers need the host check
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return bad


def weight_average(net: nn.Module, decay: float | None, ckpt: dict | None = None) -> nn.Module | None:
    """An exponential moving average of ``net``'s parameters (``torch.optim.swa_utils.AveragedModel``), or
    None when ``decay`` is None. Its buffers (codebooks, norm statistics) are ``net``'s, copied at every
    :meth:`~torch.optim.swa_utils.AveragedModel.update_parameters`; it stays in eval mode.

    Args:
        net: the plain (unwrapped) model, already on its device.
        decay: the average's decay per optimiser step (``train.weight_ema``), e.g. 0.99.
        ckpt: a checkpoint to restore the average from (its ``model`` entry and ``state.weight_ema_updates``).
            Default None.
    """
    if decay is None:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay))
    if ckpt is not None and "train_model" in ckpt:  # written with an average: "model" holds it
        ema.module.load_state_dict(ckpt["model"])
        ema.n_averaged.fill_(int(ckpt.get("state", {}).get("weight_ema_updates", 0)))
    return ema.eval()


def make_optimisers(fabric, cfg, net: nn.Module, objective: nn.Module, ckpt: dict | None, *, total: int) -> Optimisers:
    """AdamW for the model (and for the objective's discriminator, when it has one), set up through Fabric
    and restored from ``ckpt`` on resume.

    Args:
        fabric: the Fabric instance.
        cfg: the run's config (``train`` section; ``model.quantizer.codebook_lr``; ``loss.disc_learning_rate``).
        net: the plain model.
        objective: the ``ndvq.objectives.Objective`` (its ``discriminator`` may be None).
        ckpt: the checkpoint being resumed, or None.
        total: the run's last step (the cosine schedule ends there).
    """
    t, world = cfg.train, fabric.world_size
    lr = scaled_lr(t.learning_rate, world, t.scale_lr_by_world_size)
    cb_lr = cfg.model.quantizer.codebook_lr and scaled_lr(cfg.model.quantizer.codebook_lr, world, t.scale_lr_by_world_size)
    raw = make_optimizer(param_groups(net, lr, t.weight_decay, cb_lr), lr, t.beta1, t.beta2)
    model, optimizer = fabric.setup(torch.compile(net) if t.compile else net, raw)
    scheduler = make_scheduler(raw, t.lr_schedule, t.warmup_steps, total, t.min_lr_ratio, t.cycle_steps)
    o = Optimisers(model, optimizer, raw, scheduler)
    if objective.discriminator is not None:
        d_lr = scaled_lr(cfg.loss.disc_learning_rate or t.learning_rate, world, t.scale_lr_by_world_size)
        d_raw = make_optimizer(param_groups(objective.discriminator, d_lr, t.weight_decay), d_lr, t.beta1, t.beta2)
        if ckpt is not None and "discriminator" in ckpt:
            objective.discriminator.load_state_dict(ckpt["discriminator"])
        o.disc, o.disc_optimizer = fabric.setup(objective.discriminator, d_raw)
        if ckpt is not None and "disc_optimizer" in ckpt:
            d_raw.load_state_dict(ckpt["disc_optimizer"])
        objective.discriminator = o.disc  # both losses go through the (DDP-)wrapped discriminator
    if ckpt is not None:
        raw.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        fabric.strategy.precision.load_state_dict(ckpt.get("precision") or {})  # AMP grad-scaler state
    return o
