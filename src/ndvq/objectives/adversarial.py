"""Adversarial criteria (least-squares GAN and hinge) for the generator and the discriminator.

Both take the discriminator's logits (any shape, e.g. the ``[B, 1, *P]`` patch logits of
:class:`~ndvq.objectives.discriminator.PatchDiscriminator`) and return a float32 scalar.

Example:
    >>> import torch
    >>> generator_adversarial_loss(torch.ones(2, 1, 4), "lsgan")
    tensor(0.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ndvq.errors import ConfigError

__all__ = [
    "ADVERSARIAL_LOSSES",
    "check_adversarial_loss",
    "generator_adversarial_loss",
    "discriminator_adversarial_loss",
]

ADVERSARIAL_LOSSES = ("lsgan", "hinge")


def check_adversarial_loss(kind: str) -> str:
    """``kind`` if it is one of :data:`ADVERSARIAL_LOSSES`, else a :class:`ConfigError`."""
    if kind not in ADVERSARIAL_LOSSES:
        raise ConfigError(f"adversarial_loss must be one of {ADVERSARIAL_LOSSES}, got {kind!r}")
    return kind


def generator_adversarial_loss(fake_logits: torch.Tensor, kind: str = "lsgan") -> torch.Tensor:
    """Generator side: ``mean((D(fake) - 1)**2)`` (lsgan) or ``-mean(D(fake))`` (hinge).

    Args:
        fake_logits: the discriminator's logits on the reconstruction.
        kind: ``"lsgan"`` or ``"hinge"``. Default ``"lsgan"``.
    """
    if check_adversarial_loss(kind) == "lsgan":
        return (fake_logits.float() - 1).pow(2).mean()
    return -fake_logits.float().mean()


def discriminator_adversarial_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                                   kind: str = "lsgan") -> torch.Tensor:
    """Discriminator side, averaged over real and fake.

    lsgan ``0.5 * (mean((D(real) - 1)**2) + mean(D(fake)**2))``,
    hinge ``0.5 * (mean(relu(1 - D(real))) + mean(relu(1 + D(fake))))``.

    Args:
        real_logits: the discriminator's logits on the real data.
        fake_logits: its logits on the (detached) reconstruction.
        kind: ``"lsgan"`` or ``"hinge"``. Default ``"lsgan"``.
    """
    real, fake = real_logits.float(), fake_logits.float()
    if check_adversarial_loss(kind) == "lsgan":
        return 0.5 * ((real - 1).pow(2).mean() + fake.pow(2).mean())
    return 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())
