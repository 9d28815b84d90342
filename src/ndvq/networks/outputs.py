"""Named outputs of the VQ models' ``forward`` and ``encode``.

Shapes (``S`` input spatial shape, ``L`` latent spatial shape, ``G`` index columns of the quantizer
when it has more than one codebook):
    - ``reconstruction``: ``[B, C_out, *S]``
    - ``indices``: ``[B, *L]`` or ``[B, *L, G]`` (hierarchical: a :class:`HierarchicalCodes`)
    - ``counts``: ``[G, K]`` per-code counts of the batch (hierarchical: ``[top, bottom]``)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch

__all__ = ["VQVAEOutput", "HierarchicalVQVAEOutput", "HierarchicalCodes"]


@dataclass
class VQVAEOutput:
    """What :meth:`ndvq.VQVAE.forward` returns.

    Attributes:
        reconstruction: ``[B, C_out, *S]``.
        loss: ``recon_loss_factor * recon_loss + quantizer loss`` (the quantizer loss holds
            ``codebook_beta * commitment_loss`` plus any codebook / entropy terms). Scalar.
        recon_loss: unweighted reconstruction error (MSE or L1). Scalar.
        commitment_loss: unweighted ``mean((z - sg(q))**2)``. Scalar.
        perplexity: ``exp(entropy)`` of the batch code distribution. Detached scalar.
        usage: fraction of codes used at least once in the batch. Detached scalar.
        indices: code indices ``[B, *L]`` (or ``[B, *L, G]``), ``torch.long``.
        counts: per-code counts ``[G, K]`` of the batch, detached.
        losses: named breakdown of the quantizer loss (detached scalars).
    """

    reconstruction: torch.Tensor
    loss: torch.Tensor
    recon_loss: torch.Tensor
    commitment_loss: torch.Tensor
    perplexity: torch.Tensor
    usage: torch.Tensor
    indices: torch.Tensor
    counts: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)

    def scalars(self) -> dict[str, torch.Tensor]:
        """Detached scalars to log: ``loss recon_loss commitment_loss perplexity usage``."""
        return {name: getattr(self, name).detach()
                for name in ("loss", "recon_loss", "commitment_loss", "perplexity", "usage")}


class HierarchicalCodes(NamedTuple):
    """Both code levels of a :class:`ndvq.HierarchicalVQVAE`: ``top [B, *L_top]`` and
    ``bottom [B, *L]`` (each with a trailing ``G`` axis for multi-codebook quantizers).
    A tuple, so ``top, bottom = model.encode(x)`` works."""

    top: torch.Tensor
    bottom: torch.Tensor


@dataclass
class HierarchicalVQVAEOutput(VQVAEOutput):
    """What :meth:`ndvq.HierarchicalVQVAE.forward` returns.

    Same fields as :class:`VQVAEOutput`, where ``commitment_loss`` is the sum over both levels,
    ``perplexity``/``usage`` are the mean over both levels, ``indices`` is a
    :class:`HierarchicalCodes` and ``counts`` is ``[top_counts, bottom_counts]``; plus the
    per-level figures below.

    Attributes:
        top_perplexity, bottom_perplexity: per-level batch perplexity. Detached scalars.
        top_usage, bottom_usage: per-level fraction of codes used in the batch. Detached scalars.
    """

    top_perplexity: torch.Tensor | None = None
    bottom_perplexity: torch.Tensor | None = None
    top_usage: torch.Tensor | None = None
    bottom_usage: torch.Tensor | None = None

    def scalars(self) -> dict[str, torch.Tensor]:
        """Detached scalars to log: the :class:`VQVAEOutput` ones plus per-level perplexity and usage."""
        out = super().scalars()
        for name in ("top_perplexity", "bottom_perplexity", "top_usage", "bottom_usage"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value.detach()
        return out
