"""Losses: reconstruction (L1/L2), KL, LPIPS-style perceptual, adversarial, and :class:`AutoencoderLoss`."""

from ndvq.losses.adversarial import (
    AutoencoderLoss,
    discriminator_adversarial_loss,
    generator_adversarial_loss,
)
from ndvq.losses.kl import kl_divergence
from ndvq.losses.perceptual import (
    PerceptualLoss,
    PerceptualWeightsNotFoundError,
    find_perceptual_weights,
)
from ndvq.losses.reconstruction import reconstruction_loss

__all__ = [
    "AutoencoderLoss",
    "PerceptualLoss",
    "PerceptualWeightsNotFoundError",
    "find_perceptual_weights",
    "generator_adversarial_loss",
    "discriminator_adversarial_loss",
    "kl_divergence",
    "reconstruction_loss",
]
