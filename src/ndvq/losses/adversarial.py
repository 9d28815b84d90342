"""Adversarial losses (least-squares / hinge) and :class:`AutoencoderLoss`, the extra objectives of a
KL-VAE (or VQ-VAE) beyond the model's own reconstruction + KL/commitment loss.

Typical use inside a training step (the discriminator has its own optimizer)::

    crit = AutoencoderLoss(perceptual_weight=1.0, adversarial_weight=0.1, n_dims=2, in_channels=1)
    out = model(x)
    extra, logs = crit.generator_loss(x, out.reconstruction, epoch)
    (out.loss + extra).backward(); opt.step()
    if crit.adversarial_active(epoch):
        d_opt.zero_grad()                      # drop the grads the generator step left on D
        d_loss, d_logs = crit.discriminator_loss(x, out.reconstruction.detach(), epoch)
        d_loss.backward(); d_opt.step()
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from ndvq.losses.perceptual import PerceptualLoss
from ndvq.networks.discriminator import PatchDiscriminator

__all__ = ["AutoencoderLoss", "generator_adversarial_loss", "discriminator_adversarial_loss", "ADVERSARIAL_LOSSES"]

ADVERSARIAL_LOSSES = ("lsgan", "hinge")


def generator_adversarial_loss(fake_logits: torch.Tensor, kind: str = "lsgan") -> torch.Tensor:
    """Generator side: ``mean((D(fake) - 1)**2)`` (lsgan) or ``-mean(D(fake))`` (hinge)."""
    if kind == "lsgan":
        return (fake_logits.float() - 1).pow(2).mean()
    if kind == "hinge":
        return -fake_logits.float().mean()
    raise ValueError(f"adversarial_loss must be one of {ADVERSARIAL_LOSSES}, got {kind!r}")


def discriminator_adversarial_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                                   kind: str = "lsgan") -> torch.Tensor:
    """Discriminator side, averaged over real and fake:
    lsgan ``0.5 * (mean((D(real) - 1)**2) + mean(D(fake)**2))``,
    hinge ``0.5 * (mean(relu(1 - D(real))) + mean(relu(1 + D(fake))))``."""
    real, fake = real_logits.float(), fake_logits.float()
    if kind == "lsgan":
        return 0.5 * ((real - 1).pow(2).mean() + fake.pow(2).mean())
    if kind == "hinge":
        return 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())
    raise ValueError(f"adversarial_loss must be one of {ADVERSARIAL_LOSSES}, got {kind!r}")


class AutoencoderLoss(nn.Module):
    """Perceptual and adversarial terms added to an autoencoder's own loss.

    Args:
        perceptual_weight: weight of the LPIPS-style perceptual loss (2D/3D only); 0 switches it
            off and no weights are looked for. Default 0.0.
        perceptual_weights: local weights file of the perceptual network; ``None`` searches
            ``$NDVQ_PERCEPTUAL_WEIGHTS`` and the torch hub cache. Default None.
        adversarial_weight: weight of the generator's adversarial loss; 0 means no discriminator
            (``self.discriminator is None``). Default 0.0.
        adversarial_loss: ``"lsgan"`` or ``"hinge"``. Default ``"lsgan"``.
        n_dims: spatial axes of the data (1..3). Default 2.
        in_channels: channels of the data (the discriminator's input). Default 1.
        disc_channels: channels of the discriminator's first layer. Default 64.
        disc_layers: stride-2 layers of the discriminator. Default 3.
        warmup_epochs: epochs (0-based ``epoch < warmup_epochs``) during which the adversarial
            terms are off; they switch on at ``epoch >= warmup_epochs``. Default 0.
        perceptual_slices: for 3D, slices per axis fed to the 2D perceptual network. Default 8.

    Raises:
        PerceptualWeightsNotFoundError: ``perceptual_weight > 0`` and no weights file was found
            (raised here, at construction, so training stops before its first step).

    Example:
        >>> crit = AutoencoderLoss(adversarial_weight=0.5, n_dims=1, in_channels=2, disc_channels=8)
        >>> x = torch.randn(4, 2, 64)
        >>> loss, logs = crit.generator_loss(x, x + 0.1, epoch=0)
        >>> sorted(logs)
        ['gen_loss', 'perceptual_loss']
    """

    def __init__(
        self,
        perceptual_weight: float = 0.0,
        perceptual_weights: str | os.PathLike | None = None,
        adversarial_weight: float = 0.0,
        adversarial_loss: str = "lsgan",
        n_dims: int = 2,
        in_channels: int = 1,
        disc_channels: int = 64,
        disc_layers: int = 3,
        warmup_epochs: int = 0,
        perceptual_slices: int = 8,
    ):
        super().__init__()
        if perceptual_weight < 0 or adversarial_weight < 0:
            raise ValueError(
                f"loss weights must be >= 0, got perceptual_weight={perceptual_weight}, "
                f"adversarial_weight={adversarial_weight}"
            )
        if adversarial_loss not in ADVERSARIAL_LOSSES:
            raise ValueError(f"adversarial_loss must be one of {ADVERSARIAL_LOSSES}, got {adversarial_loss!r}")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        self.perceptual_weight, self.adversarial_weight = float(perceptual_weight), float(adversarial_weight)
        self.adversarial_loss, self.warmup_epochs = adversarial_loss, int(warmup_epochs)
        self.perceptual = (
            PerceptualLoss(n_dims, perceptual_weights, perceptual_slices) if perceptual_weight > 0 else None
        )
        self.discriminator = (
            PatchDiscriminator(n_dims, in_channels, disc_channels, disc_layers) if adversarial_weight > 0 else None
        )

    def adversarial_active(self, epoch: int) -> bool:
        """True when there is a discriminator and ``epoch >= warmup_epochs``."""
        return self.discriminator is not None and epoch >= self.warmup_epochs

    def generator_loss(self, x: torch.Tensor, recon: torch.Tensor, epoch: int) -> tuple[torch.Tensor, dict]:
        """``perceptual_weight * perceptual + adversarial_weight * gen_adversarial`` (the latter only
        once ``epoch >= warmup_epochs``), plus detached scalars ``perceptual_loss`` and ``gen_loss``.

        Args:
            x: the input ``[B, C, *S]``.
            recon: the reconstruction (with gradients to the autoencoder), same shape.
            epoch: the current 0-based epoch.
        """
        total = recon.new_zeros((), dtype=torch.float32)
        zero = total.detach()
        perc = gen = zero
        if self.perceptual is not None:
            perc = self.perceptual(recon, x)
            total = total + self.perceptual_weight * perc
        if self.adversarial_active(epoch):
            gen = generator_adversarial_loss(self.discriminator(recon), self.adversarial_loss)
            total = total + self.adversarial_weight * gen
        return total, {"perceptual_loss": perc.detach(), "gen_loss": gen.detach()}

    def discriminator_loss(self, x: torch.Tensor, recon: torch.Tensor, epoch: int) -> tuple[torch.Tensor, dict]:
        """The discriminator's loss on real ``x`` and (detached) ``recon``, and ``{"disc_loss": ...}``.

        Before warm-up (or without a discriminator) this is a zero tensor that does not require
        grad and the discriminator is not run; check :meth:`adversarial_active` before ``backward``.
        """
        if not self.adversarial_active(epoch):
            zero = x.new_zeros((), dtype=torch.float32)
            return zero, {"disc_loss": zero}
        logits = self.discriminator(torch.cat([x, recon.detach()]))
        real, fake = logits.chunk(2)
        loss = discriminator_adversarial_loss(real, fake, self.adversarial_loss)
        return loss, {"disc_loss": loss.detach()}
