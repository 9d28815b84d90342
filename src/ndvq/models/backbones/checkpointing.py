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

__all__ = ["run_blocks", "set_activation_checkpointing"]


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
