"""Named outputs of the models' ``bottleneck``, ``forward`` and ``encode``.

Shapes (``S`` input spatial shape, ``L`` latent spatial shape, ``E`` latent channels, ``G`` index
columns of a quantizer with more than one codebook, ``K`` codes per codebook):
    - ``reconstruction``: ``[B, C_out, *S]``
    - ``indices``: ``[B, *L]`` or ``[B, *L, G]`` (hierarchical: a :class:`HierarchicalCodes`)
    - ``counts``: ``[G, K]`` per-code counts of the batch (hierarchical: ``[top, bottom]``)
    - ``mean``, ``std``: ``[B, E, *L]`` (Gaussian bottleneck)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch

__all__ = ["BottleneckOutput", "AutoencoderOutput", "HierarchicalAutoencoderOutput", "HierarchicalCodes",
           "GaussianLatent"]


@dataclass
class GaussianLatent:
    """A diagonal Gaussian posterior, as returned by a Gaussian model's ``encode``.

    Attributes:
        mean: ``[B, E, *L]``.
        std: same shape, positive.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """``mean + std * eps`` with ``eps ~ N(0, I)``."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps


class HierarchicalCodes(NamedTuple):
    """Both code levels of a hierarchical model: ``top [B, *L_top]`` and ``bottom [B, *L]`` (each with a
    trailing ``G`` axis for multi-codebook quantizers). A tuple, so ``top, bottom = model.encode(x)`` works."""

    top: torch.Tensor
    bottom: torch.Tensor


@dataclass
class BottleneckOutput:
    """What a bottleneck's ``forward`` returns.

    Attributes:
        latent: what the decoder reads, ``[B, E, *L]`` (quantized vectors with straight-through
            gradients, or a Gaussian sample in training / the mean in eval).
        aux_loss: the quantizer's own weighted loss (``beta * commitment`` + codebook / entropy
            terms); a zero for a Gaussian. Scalar.
        commitment_loss: unweighted ``mean((z - sg(q))**2)``; None for a Gaussian.
        kl_loss: unweighted ``KL(q(z|x) || N(0, I))`` (summed over latent dims, batch mean); None for quantizers.
        perplexity, usage: batch code statistics (detached scalars); None for a Gaussian.
        indices: code indices ``[B, *L(, G)]``; None for a Gaussian.
        counts: per-code counts ``[G, K]`` (detached); None for a Gaussian.
        mean, std: posterior ``[B, E, *L]``; None for quantizers.
        losses: named breakdown of ``aux_loss`` (detached scalars).
    """

    latent: torch.Tensor
    aux_loss: torch.Tensor
    commitment_loss: torch.Tensor | None = None
    kl_loss: torch.Tensor | None = None
    perplexity: torch.Tensor | None = None
    usage: torch.Tensor | None = None
    indices: torch.Tensor | None = None
    counts: torch.Tensor | None = None
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class AutoencoderOutput:
    """What an autoencoder's ``forward`` returns: what the model computes, no loss weights.

    Attributes:
        reconstruction: ``[B, C_out, *S]``.
        aux_loss: the quantizer's own loss (beta-weighted commitment + its codebook/entropy terms);
            a zero for a Gaussian bottleneck. Scalar.
        commitment_loss: unweighted commitment loss (quantizers; None for a Gaussian).
        kl_loss: unweighted KL of a Gaussian bottleneck (None for quantizers).
        perplexity, usage: batch code statistics, detached scalars (None for a Gaussian).
        indices: code indices ``[B, *L(, G)]`` (hierarchical: :class:`HierarchicalCodes`; None for a Gaussian).
        counts: per-code counts ``[G, K]`` (hierarchical: ``[top, bottom]``; None for a Gaussian).
        mean, std: posterior ``[B, E, *L]`` (None for quantizers).
        losses: named breakdown of ``aux_loss`` (detached scalars).
        loss: the presets' Python-API total (``VQVAE``: ``recon_loss_factor * recon_loss + aux_loss``,
            ``KLVAE``: ``recon_loss + kl_weight * kl_loss``); None from :class:`ndvq.models.Autoencoder`.
        recon_loss: the presets' unweighted reconstruction error (None from ``Autoencoder``).
    """

    reconstruction: torch.Tensor
    aux_loss: torch.Tensor
    commitment_loss: torch.Tensor | None = None
    kl_loss: torch.Tensor | None = None
    perplexity: torch.Tensor | None = None
    usage: torch.Tensor | None = None
    indices: torch.Tensor | HierarchicalCodes | None = None
    counts: torch.Tensor | list[torch.Tensor] | None = None
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    loss: torch.Tensor | None = None
    recon_loss: torch.Tensor | None = None

    def scalars(self) -> dict[str, torch.Tensor]:
        """Detached scalars to log: ``commitment_loss perplexity usage`` (quantizers) or
        ``kl_loss latent_std`` (Gaussian), preceded by ``loss recon_loss`` when a preset filled them."""
        names = ("loss", "recon_loss", "commitment_loss", "kl_loss", "perplexity", "usage")
        out = {name: getattr(self, name).detach() for name in names if getattr(self, name) is not None}
        if self.mean is not None:
            out["latent_std"] = self.mean.detach().float().std()
        return out


@dataclass
class HierarchicalAutoencoderOutput(AutoencoderOutput):
    """What a hierarchical model's ``forward`` returns.

    Same fields as :class:`AutoencoderOutput`, where ``aux_loss`` and ``commitment_loss`` are sums over
    both levels, ``perplexity``/``usage`` the mean over both levels, ``indices`` a
    :class:`HierarchicalCodes` and ``counts`` ``[top_counts, bottom_counts]``; plus:

    Attributes:
        top_perplexity, bottom_perplexity: per-level batch perplexity. Detached scalars.
        top_usage, bottom_usage: per-level fraction of codes used in the batch. Detached scalars.
    """

    top_perplexity: torch.Tensor | None = None
    bottom_perplexity: torch.Tensor | None = None
    top_usage: torch.Tensor | None = None
    bottom_usage: torch.Tensor | None = None

    def scalars(self) -> dict[str, torch.Tensor]:
        """The :class:`AutoencoderOutput` scalars plus per-level perplexity and usage."""
        out = super().scalars()
        for name in ("top_perplexity", "bottom_perplexity", "top_usage", "bottom_usage"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value.detach()
        return out
