"""The training objective: the one owner of every loss weight.

A model's ``forward`` returns what it computes (the reconstruction, the bottleneck's own loss, the
unweighted KL of a Gaussian bottleneck); :class:`Objective` weights and adds the terms:

    loss = recon_weight * reconstruction_loss(reconstruction, x, recon_loss)
         + aux_loss                                  (the quantizer's beta-weighted loss; 0 for a Gaussian)
         + kl_weight * kl_loss                       (Gaussian bottleneck only)
         + perceptual_weight * perceptual            (when perceptual_weight > 0)
         + adversarial_weight * w * generator_loss   (when adversarial_weight > 0, after the warm-up
                                                      epochs and the start step; w = 1, or VQGAN's
                                                      adaptive weight at the decoder's last layer)

Typical training step (the discriminator has its own optimizer)::

    objective = Objective(n_dims=2, in_channels=1, adversarial_weight=0.1)
    out = model(x)
    res = objective(x, out, epoch, step=step, last_layer=model.backbone.last_layer)
    res.loss.backward(); opt.step()
    if objective.adversarial_active(epoch, step):
        d_opt.zero_grad()                      # drop the grads the generator step left on D
        d_loss, d_scalars = objective.discriminator_loss(x, out.reconstruction.detach(), epoch, step)
        d_loss.backward(); d_opt.step()
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ndvq import nd
from ndvq.errors import ConfigError
from ndvq.objectives.adversarial import (
    adaptive_generator_weight,
    check_adversarial_loss,
    discriminator_adversarial_loss,
    generator_adversarial_loss,
)
from ndvq.objectives.discriminator import PatchDiscriminator
from ndvq.objectives.perceptual import PerceptualLoss
from ndvq.objectives.reconstruction import RECON_LOSSES, reconstruction_loss

__all__ = ["Objective", "ObjectiveOutput"]


@dataclass
class ObjectiveOutput:
    """What :class:`Objective` returns.

    Attributes:
        loss: the weighted total (scalar, differentiable).
        scalars: detached scalars to log: the model's own (``out.scalars()``) plus ``loss``,
            ``recon_loss`` and, when those terms are on, ``perceptual_loss`` and ``gen_loss``.
    """

    loss: torch.Tensor
    scalars: dict[str, torch.Tensor]


def _check_weights(recon_loss: str, recon_weight: float, weights: dict[str, float],
                   adversarial_loss: str, warmup_epochs: int, start_step: int = 0) -> None:
    """One-line :class:`ConfigError` for any argument out of range."""
    if recon_loss not in RECON_LOSSES:
        raise ConfigError(f"recon_loss must be one of {RECON_LOSSES}, got {recon_loss!r}")
    if not recon_weight > 0:
        raise ConfigError(f"recon_weight must be > 0, got {recon_weight}")
    negative = {k: v for k, v in weights.items() if not v >= 0}
    if negative:
        listed = ", ".join(f"{k}={v}" for k, v in negative.items())
        raise ConfigError(f"loss weights must be >= 0, got {listed}")
    check_adversarial_loss(adversarial_loss)
    if warmup_epochs < 0:
        raise ConfigError(f"adversarial_warmup_epochs must be >= 0, got {warmup_epochs}")
    if start_step < 0:
        raise ConfigError(f"adversarial_start_step must be >= 0, got {start_step}")


class Objective(nn.Module):
    """Reconstruction, bottleneck, KL, perceptual and adversarial terms, weighted and added.

    Args:
        n_dims: spatial axes of the data (1..3).
        in_channels: channels of the data (the discriminator's input).
        recon_loss: ``"mse"``/``"l2"`` (mean squared error) or ``"l1"``. Default ``"mse"``.
        recon_weight: weight of the reconstruction loss (> 0). Default 1.0.
        kl_weight: weight of the model's unweighted ``kl_loss`` (used only when the model gives
            one, i.e. a Gaussian bottleneck). Default 1e-6.
        perceptual_weight: weight of the LPIPS perceptual loss (2D/3D only); 0 switches it
            off and no weights are looked for. Default 0.0.
        perceptual_weights: local weights file of the perceptual network's trunk; ``None`` searches
            ``$NDVQ_PERCEPTUAL_WEIGHTS`` and the torch hub cache. Default None.
        perceptual_slices: for 3D, slices per axis fed to the 2D perceptual network. Default 8.
        perceptual_network: ``"auto"``, ``"lpips-vgg"``, ``"lpips-alex"`` or ``"uniform"``
            (:class:`~ndvq.objectives.perceptual.PerceptualLoss`). Default ``"auto"``.
        perceptual_fake_3d_ratio: for 3D, MONAI's 2.5D loss on this random fraction of the slices
            of each axis (None: ``perceptual_slices`` evenly spaced slices). Default None.
        adversarial_weight: weight of the generator's adversarial loss; 0 means no discriminator
            (``self.discriminator is None``). Default 0.0.
        adversarial_loss: ``"lsgan"``, ``"hinge"`` or ``"bce"``. Default ``"lsgan"``.
        adversarial_warmup_epochs: epochs (0-based ``epoch < adversarial_warmup_epochs``) during
            which the adversarial terms are off. Default 0.
        adversarial_start_step: optimizer steps (``step < adversarial_start_step``) during which the
            adversarial terms are off (VQGAN's ``disc_start``). Default 0.
        adversarial_adaptive_weight: multiply the generator loss by VQGAN's adaptive weight
            ``||grad rec|| / (||grad gen|| + 1e-4)`` at the decoder's last layer (``forward`` then
            needs ``last_layer``). Default False.
        adversarial_max_weight: upper clamp of the adaptive weight. Default 1e4.
        disc_channels: channels of the discriminator's first layer. Default 64.
        disc_layers: stride-2 layers of the discriminator. Default 3.

    Raises:
        ConfigError: an argument out of range (one line naming it and its value).
        PerceptualWeightsNotFoundError: ``perceptual_weight > 0`` and no weights file was found
            (raised here, at construction, so training stops before its first step).

    Example:
        >>> objective = Objective(n_dims=1, in_channels=2, adversarial_weight=0.5, disc_channels=8)
        >>> res = objective(x, model(x), epoch=0)                     # doctest: +SKIP
        >>> sorted(res.scalars)                                       # doctest: +SKIP
        ['commitment_loss', 'gen_loss', 'loss', 'perplexity', 'recon_loss', 'usage']
    """

    def __init__(
        self,
        n_dims: int,
        in_channels: int,
        recon_loss: str = "mse",
        recon_weight: float = 1.0,
        kl_weight: float = 1e-6,
        perceptual_weight: float = 0.0,
        perceptual_weights: str | os.PathLike | None = None,
        perceptual_slices: int = 8,
        perceptual_network: str = "auto",
        perceptual_fake_3d_ratio: float | None = None,
        adversarial_weight: float = 0.0,
        adversarial_loss: str = "lsgan",
        adversarial_warmup_epochs: int = 0,
        adversarial_start_step: int = 0,
        adversarial_adaptive_weight: bool = False,
        adversarial_max_weight: float = 1e4,
        disc_channels: int = 64,
        disc_layers: int = 3,
    ):
        super().__init__()
        nd.check_n_dims(n_dims)
        if in_channels < 1:
            raise ConfigError(f"in_channels must be >= 1, got {in_channels}")
        weights = {"kl_weight": kl_weight, "perceptual_weight": perceptual_weight,
                   "adversarial_weight": adversarial_weight}
        _check_weights(recon_loss, recon_weight, weights, adversarial_loss, adversarial_warmup_epochs,
                       adversarial_start_step)
        self.n_dims, self.in_channels = n_dims, in_channels
        self.recon_loss, self.recon_weight = recon_loss, float(recon_weight)
        self.kl_weight = float(kl_weight)
        self.perceptual_weight, self.adversarial_weight = float(perceptual_weight), float(adversarial_weight)
        self.adversarial_loss = adversarial_loss
        self.adversarial_warmup_epochs = int(adversarial_warmup_epochs)
        self.adversarial_start_step = int(adversarial_start_step)
        self.adversarial_adaptive_weight = bool(adversarial_adaptive_weight)
        self.adversarial_max_weight = float(adversarial_max_weight)
        self.perceptual = (
            PerceptualLoss(n_dims, perceptual_weights, perceptual_slices, perceptual_network, perceptual_fake_3d_ratio)
            if perceptual_weight > 0 else None
        )
        self.discriminator = (
            PatchDiscriminator(n_dims, in_channels, disc_channels, disc_layers)
            if adversarial_weight > 0 else None
        )

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Recompute the perceptual trunk's activations in the backward pass (``train.activation_checkpointing``)."""
        if self.perceptual is not None:
            self.perceptual.net.activation_checkpointing = bool(enabled)

    def adversarial_active(self, epoch: int, step: int | None = None) -> bool:
        """True when there is a discriminator, ``epoch >= adversarial_warmup_epochs`` and (when
        ``step`` is given) ``step >= adversarial_start_step``."""
        return (self.discriminator is not None and epoch >= self.adversarial_warmup_epochs
                and (step is None or step >= self.adversarial_start_step))

    def forward(self, x: torch.Tensor, out: Any, epoch: int = 0, *, extras: bool = True, step: int | None = None,
                last_layer: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> ObjectiveOutput:
        """The weighted total and its detached scalars.

        Args:
            x: the input ``[B, C, *S]`` (the reconstruction target).
            out: a model output with ``reconstruction`` (same shape as ``x``), ``aux_loss`` (the
                quantizer's own loss; a zero for a Gaussian bottleneck), ``kl_loss`` (unweighted KL
                or None) and ``scalars()`` (the model's detached log scalars).
            epoch: the current 0-based epoch (for the adversarial warm-up). Default 0.
            extras: False leaves out the perceptual and adversarial terms (e.g. for validation,
                whose ``loss`` is the model-side objective only). Default True.
            step: the optimizer step, for ``adversarial_start_step`` (None: not checked). Default None.
            last_layer: the decoder's last weight (``model.backbone.last_layer``), needed for the
                adaptive adversarial weight while gradients are recorded. Default None.
            mask: ``[B, 1, *S]`` bool, the real elements of padded items (``ndvq.data.common.valid_mask``):
                the reconstruction loss counts only these. Default None: every element.
        """
        rec = reconstruction_loss(out.reconstruction, x, self.recon_loss, mask=mask)
        loss = self.recon_weight * rec + out.aux_loss
        if out.kl_loss is not None:
            loss = loss + self.kl_weight * out.kl_loss
        scalars = dict(out.scalars())
        scalars["recon_loss"] = rec.detach()
        if extras and (self.perceptual is not None or self.discriminator is not None):
            extra, extra_scalars = self._extra_terms(x, out.reconstruction, self.recon_weight * rec,
                                                     (epoch, step), last_layer)
            loss = loss + extra
            scalars.update(extra_scalars)
        scalars["loss"] = loss.detach()
        return ObjectiveOutput(loss=loss, scalars=scalars)

    def _extra_terms(self, x: torch.Tensor, recon: torch.Tensor, rec: torch.Tensor, when: tuple[int, int | None],
                     last_layer: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
        """``perceptual_weight * perceptual + adversarial_weight * w * gen`` (the latter only when
        active; ``gen_loss`` is logged as 0 before) and their detached scalars. ``rec`` is the
        weighted reconstruction loss, ``when`` = ``(epoch, step)``."""
        total = recon.new_zeros((), dtype=torch.float32)
        scalars: dict[str, torch.Tensor] = {}
        if self.perceptual is not None:
            perc = self.perceptual(recon, x)
            total = total + self.perceptual_weight * perc
            scalars["perceptual_loss"] = perc.detach()
        if self.discriminator is not None:
            gen = total.new_zeros(())
            if self.adversarial_active(*when):
                gen = generator_adversarial_loss(self.discriminator(recon), self.adversarial_loss)
                weight = self._adaptive_weight(rec + total, gen, last_layer)
                total = total + self.adversarial_weight * weight * gen
                scalars["adaptive_weight"] = weight.detach()
            scalars["gen_loss"] = gen.detach()
        return total, scalars

    def _adaptive_weight(self, rec: torch.Tensor, gen: torch.Tensor, last_layer: torch.Tensor | None) -> torch.Tensor:
        """VQGAN's adaptive weight while gradients are recorded and it is on; else 1."""
        if not (self.adversarial_adaptive_weight and torch.is_grad_enabled() and gen.requires_grad):
            return gen.new_ones(())
        if last_layer is None:
            raise ValueError("adversarial_adaptive_weight=True needs forward(..., last_layer=model.backbone.last_layer)")
        return adaptive_generator_weight(rec, gen, last_layer, self.adversarial_max_weight)

    def discriminator_loss(self, x: torch.Tensor, recon: torch.Tensor, epoch: int,
                           step: int | None = None) -> tuple[torch.Tensor, dict]:
        """The discriminator's loss on real ``x`` and (detached) ``recon``, and ``{"disc_loss": ...}``.

        Before the warm-up ends (or without a discriminator) this is a zero tensor that does not
        require grad and the discriminator is not run; check :meth:`adversarial_active` before
        ``backward``.

        Args:
            x: the input ``[B, C, *S]``.
            recon: the reconstruction, same shape (detached here).
            epoch: the current 0-based epoch.
            step: the optimizer step (for ``adversarial_start_step``; None: not checked). Default None.
        """
        if not self.adversarial_active(epoch, step):
            zero = x.new_zeros((), dtype=torch.float32)
            return zero, {"disc_loss": zero}
        logits = self.discriminator(torch.cat([x, recon.detach()]))  # [2B, 1, *P]
        real, fake = logits.chunk(2)
        loss = discriminator_adversarial_loss(real, fake, self.adversarial_loss)
        return loss, {"disc_loss": loss.detach()}
