"""The interface every quantizer meets, and the code-usage statistics they share.

A quantizer takes tokens ``z`` of shape ``[..., D]`` (channels last; it never knows the
spatial layout) and returns a :class:`QuantizerOutput`. Models move channels last,
call the quantizer and move channels back.

Shapes:
    - input ``z``: ``[..., D]`` (``D == quantizer.dim``)
    - ``quantized``: same shape as ``z``
    - ``indices``: ``[...]`` (one codebook) or ``[..., G]`` (``G == quantizer.n_codebooks``
      codebooks: residual levels or groups), ``torch.long``
    - ``counts``: ``[G, K]`` float, how often each code was chosen in this batch,
      summed over all ranks when ``torch.distributed`` is initialised and the module is training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["QuantizerOutput", "Quantizer", "usage_from_counts", "all_reduce_", "is_distributed"]


@dataclass
class QuantizerOutput:
    """What every quantizer returns.

    Attributes:
        quantized: quantized vectors with gradients routed to the input
            (straight-through or rotation trick), same shape as the input.
        indices: integer code indices, ``[...]`` or ``[..., G]``.
        loss: the quantizer's weighted auxiliary loss to add to the model loss
            (``beta * commitment`` plus codebook / entropy terms where they apply). Scalar.
        commitment_loss: unweighted ``mean((z - sg(q))**2)``. Scalar (0 for FSQ).
        perplexity: ``exp(entropy)`` of the batch code distribution, averaged over codebooks. Detached scalar.
        usage: fraction of codes used at least once in the batch, averaged over codebooks. Detached scalar.
        counts: per-code counts in the batch, ``[G, K]``, detached.
        losses: named breakdown of ``loss`` (e.g. ``{"commitment": ..., "entropy": ...}``), detached scalars.
    """

    quantized: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    commitment_loss: torch.Tensor
    perplexity: torch.Tensor
    usage: torch.Tensor
    counts: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)


class Quantizer(nn.Module):
    """Base class. Subclasses set ``dim``, ``n_codes`` and ``n_codebooks`` and implement
    :meth:`forward` and :meth:`lookup`.

    Attributes:
        dim: token dimension ``D`` the quantizer accepts.
        n_codes: codes per codebook ``K`` (for FSQ/LFQ the implicit codebook size).
        n_codebooks: ``G``, number of index columns (1 for a plain quantizer; residual levels or groups).
        codebook_sizes: codes per index column, ``G`` ints (the one owner of the codebook size).
    """

    dim: int
    n_codes: int
    n_codebooks: int = 1

    def forward(self, z: torch.Tensor) -> QuantizerOutput:  # pragma: no cover - interface
        raise NotImplementedError

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """Indices (``[...]`` or ``[..., G]``) -> quantized vectors ``[..., D]``; inverse of forward's indices."""
        raise NotImplementedError

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """Codes per index column: ``(n_codes,) * n_codebooks`` (FSQ ``prod(levels)``, LFQ ``2**bits``);
        composite quantizers (residual, grouped) ask their parts."""
        return (int(self.n_codes),) * self.n_codebooks

    @property
    def index_suffix(self) -> tuple[int, ...]:
        """Trailing shape of ``indices`` beyond the token shape: ``()`` or ``(G,)``."""
        return () if self.n_codebooks == 1 else (self.n_codebooks,)

    def check_input(self, z: torch.Tensor) -> None:
        """Raise a clear error if ``z`` is not ``[..., dim]`` floating point."""
        if not torch.is_floating_point(z):
            raise TypeError(f"{type(self).__name__} expects floating-point tokens, got {z.dtype}")
        if z.ndim < 1 or z.shape[-1] != self.dim:
            raise ValueError(f"{type(self).__name__} expects tokens [..., {self.dim}], got shape {tuple(z.shape)}")


def is_distributed() -> bool:
    """True when a ``torch.distributed`` process group is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_(t: torch.Tensor, training: bool) -> torch.Tensor:
    """Sum ``t`` across ranks in place when training under an initialised process group.

    Fixed-size tensors only (no variable-size collectives); a no-op in eval mode so
    evaluation never issues collective calls.
    """
    if training and is_distributed():
        dist.all_reduce(t)
    return t


def usage_from_counts(counts: torch.Tensor, eps: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor]:
    """Perplexity and used fraction from per-code counts ``[G, K]`` (averaged over G).

    No host syncs: returns tensors.
    """
    counts = counts.float()
    probs = counts / counts.sum(dim=-1, keepdim=True).clamp_min(eps)  # [G, K]
    entropy = -(probs * torch.log(probs.clamp_min(eps))).sum(dim=-1)  # [G]
    perplexity = entropy.exp().mean()
    usage = (counts > 0).float().mean()
    return perplexity, usage
