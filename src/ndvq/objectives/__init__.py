"""Losses outside the models: reconstruction, KL, perceptual, adversarial, and :class:`Objective`,
the one owner of every loss weight.

Imports only torch, :mod:`ndvq.nd`, :mod:`ndvq.errors` and this package.

Example:
    >>> import torch
    >>> from ndvq.objectives import reconstruction_loss
    >>> reconstruction_loss(torch.zeros(2, 3), torch.ones(2, 3), "l1")
    tensor(1.)
"""

from ndvq.objectives.adversarial import (
    ADVERSARIAL_LOSSES,
    discriminator_adversarial_loss,
    generator_adversarial_loss,
)
from ndvq.objectives.discriminator import PatchDiscriminator
from ndvq.objectives.kl import kl_divergence
from ndvq.objectives.objective import Objective, ObjectiveOutput
from ndvq.objectives.perceptual import (
    PerceptualLoss,
    PerceptualWeightsNotFoundError,
    find_perceptual_weights,
)
from ndvq.objectives.reconstruction import RECON_LOSSES, reconstruction_loss

__all__ = [
    "ADVERSARIAL_LOSSES",
    "RECON_LOSSES",
    "Objective",
    "ObjectiveOutput",
    "PatchDiscriminator",
    "PerceptualLoss",
    "PerceptualWeightsNotFoundError",
    "discriminator_adversarial_loss",
    "find_perceptual_weights",
    "generator_adversarial_loss",
    "kl_divergence",
    "reconstruction_loss",
]
