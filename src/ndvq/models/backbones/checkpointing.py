"""Activation checkpointing for the backbones: run a list of blocks, keeping only each block's input.

With checkpointing on (and gradients enabled) every block's inner activations are dropped after its
forward pass and recomputed during the backward pass; only the tensors passed between blocks stay
in memory. This trades one extra forward pass for memory (MONAI calls the option ``use_checkpoint``;
MONAI checkpoints the whole encoder and decoder, ndvq each block, which saves more).

Example:
    >>> import torch
    >>> from torch import nn
    >>> blocks = [nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)]
    >>> x = torch.randn(3, 4, requires_grad=True)
    >>> torch.allclose(run_blocks(blocks, x, True), run_blocks(blocks, x, False))
    True
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["run_blocks", "set_activation_checkpointing", "estimate_step_memory", "memory_advice"]


def run_blocks(blocks: Iterable[nn.Module], x: torch.Tensor, checkpointing: bool = False) -> torch.Tensor:
    """``x`` through every block in order.

    Args:
        blocks: the modules, each mapping one tensor to one tensor.
        x: the input.
        checkpointing: recompute each block's activations in the backward pass instead of storing
            them (only when gradients are being recorded; parameter-free blocks run directly). Default False.
    """
    use = checkpointing and torch.is_grad_enabled()
    for block in blocks:
        if use and any(True for _ in block.parameters()):
            x = checkpoint(block, x, use_reentrant=False)
        else:
            x = block(x)
    return x


def set_activation_checkpointing(model: nn.Module, enabled: bool = True) -> int:
    """Switch activation checkpointing on (or off) in every backbone of ``model`` (any ndvq model);
    returns how many backbones were switched (0: the model has none that supports it)."""
    found = [m for m in model.modules() if hasattr(m, "activation_checkpointing")]
    for m in found:
        m.activation_checkpointing = bool(enabled)
    return len(found)


def estimate_step_memory(model: nn.Module, objective: nn.Module | None, batch_shape: tuple[int, ...],
                         optimizer_states: int = 2) -> dict[str, int] | None:
    """Estimated bytes of one training step without activation checkpointing, computed on the ``meta``
    device (no memory, no arithmetic): the tensors the forward pass (model + objective) saves for
    backward, plus parameters, their gradients and ``optimizer_states`` Adam moments each.

    Args:
        model: the model (copied to ``meta``; the original is untouched).
        objective: the training objective (``Objective``) or None.
        batch_shape: ``[B, C, *S]`` of one training batch.
        optimizer_states: tensors per parameter the optimizer keeps (Adam/AdamW: 2). Default 2.

    Returns:
        ``{"activations", "parameters", "total"}`` in bytes, or None when the forward pass cannot run
        on ``meta`` (e.g. a host sync inside a quantizer).
    """
    import copy

    saved: dict[int, int] = {}

    def pack(t: torch.Tensor):
        if not isinstance(t, nn.Parameter):
            saved[id(t)] = t.numel() * t.element_size()
        return t

    try:
        m = copy.deepcopy(model).to("meta").train()
        obj = copy.deepcopy(objective).to("meta").train() if objective is not None else None
        if hasattr(m, "validate_inputs"):
            m.validate_inputs = False
        params = sum(p.numel() * p.element_size() for p in m.parameters() if p.requires_grad)
        x = torch.empty(batch_shape, device="meta")
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = m(x)
            if obj is not None:
                obj(x, out, 0)
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return None
    acts = sum(saved.values()) + x.numel() * x.element_size()
    total = acts + params * (2 + optimizer_states)
    return {"activations": acts, "parameters": params, "total": total}


def memory_advice(estimate: dict[str, int] | None, available: int | None) -> str | None:
    """One line for the start summary when the estimated step memory exceeds ``available`` bytes
    (None when it fits or nothing is known), naming the keys that reduce it."""
    if estimate is None or available is None or estimate["total"] <= available:
        return None
    gb = 1024 ** 3
    return (f"estimated peak memory {estimate['total'] / gb:.1f} GB (activations {estimate['activations'] / gb:.1f} "
            f"GB) exceeds the {available / gb:.1f} GB available; reduce it with train.activation_checkpointing=true, "
            f"a smaller train.batch_size (with train.grad_accum to keep the effective batch), a smaller "
            f"data.patch_size, or train.precision=bf16-mixed")
