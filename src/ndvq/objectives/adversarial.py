"""Adversarial criteria (least-squares GAN, hinge, BCE) and VQGAN's adaptive generator weight.

The criteria take the discriminator's logits (any shape, e.g. the ``[B, 1, *P]`` patch logits of
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
    "adaptive_generator_weight",
]

ADVERSARIAL_LOSSES = ("lsgan", "hinge", "bce")


def check_adversarial_loss(kind: str) -> str:
    """``kind`` if it is one of :data:`ADVERSARIAL_LOSSES`, else a :class:`ConfigError`."""
    if kind not in ADVERSARIAL_LOSSES:
        raise ConfigError(f"adversarial_loss must be one of {ADVERSARIAL_LOSSES}, got {kind!r}")
    return kind


def generator_adversarial_loss(fake_logits: torch.Tensor, kind: str = "lsgan") -> torch.Tensor:
    """Generator side: ``mean((D(fake) - 1)**2)`` (lsgan), ``-mean(D(fake))`` (hinge) or
    ``BCE(D(fake), 1) = mean(softplus(-D(fake)))`` (bce).

    Args:
        fake_logits: the discriminator's logits on the reconstruction.
        kind: ``"lsgan"``, ``"hinge"`` or ``"bce"``. Default ``"lsgan"``.
    """
    kind, fake = check_adversarial_loss(kind), fake_logits.float()
    if kind == "lsgan":
        return (fake - 1).pow(2).mean()
    if kind == "bce":
        return F.softplus(-fake).mean()
    return -fake.mean()


def discriminator_adversarial_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                                   kind: str = "lsgan") -> torch.Tensor:
    """Discriminator side, averaged over real and fake.

    lsgan ``0.5 * (mean((D(real) - 1)**2) + mean(D(fake)**2))``,
    hinge ``0.5 * (mean(relu(1 - D(real))) + mean(relu(1 + D(fake))))``,
    bce ``0.5 * (BCE(D(real), 1) + BCE(D(fake), 0))``.

    Args:
        real_logits: the discriminator's logits on the real data.
        fake_logits: its logits on the (detached) reconstruction.
        kind: ``"lsgan"``, ``"hinge"`` or ``"bce"``. Default ``"lsgan"``.
    """
    kind, real, fake = check_adversarial_loss(kind), real_logits.float(), fake_logits.float()
    if kind == "lsgan":
        return 0.5 * ((real - 1).pow(2).mean() + fake.pow(2).mean())
    if kind == "bce":
        return 0.5 * (F.softplus(-real).mean() + F.softplus(fake).mean())
    return 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())


def adaptive_generator_weight(rec_loss: torch.Tensor, gen_loss: torch.Tensor, last_layer: torch.Tensor,
                              max_weight: float = 1e4) -> torch.Tensor:
    """VQGAN's adaptive weight ``||grad rec|| / (||grad gen|| + 1e-4)`` at the decoder's last layer,
    clamped to ``[0, max_weight]`` and detached (taming-transformers ``calculate_adaptive_weight``).

    Args:
        rec_loss: the reconstruction side (weighted reconstruction + perceptual), a scalar with a graph.
        gen_loss: the generator's adversarial loss, a scalar with a graph.
        last_layer: the weight of the decoder's last layer (``model.backbone.last_layer``).
        max_weight: upper clamp. Default 1e4.

    Example:
        >>> w = torch.ones(3, requires_grad=True)
        >>> adaptive_generator_weight((2 * w).sum(), w.sum(), w)
        tensor(1.9999)
    """
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_gen = torch.autograd.grad(gen_loss, last_layer, retain_graph=True)[0]
    weight = g_rec.norm() / (g_gen.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()
