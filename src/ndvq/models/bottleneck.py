"""Bottlenecks between encoder and decoder: any quantizer (discrete codes) or a diagonal Gaussian.

Both take the encoder output ``z [B, in_channels, *L]`` (channels first) and return a
:class:`~ndvq.models.outputs.BottleneckOutput` whose ``latent [B, embedding_dim, *L]`` the decoder
reads. Both say how many codes they have: ``codebook_sizes`` (empty for the Gaussian).

Example:
    >>> import torch
    >>> vq = QuantizerBottleneck("lfq", embedding_dim=16, n_codes=512)
    >>> vq.codebook_sizes, vq(torch.randn(2, 16, 8, 8)).indices.shape
    ((512,), torch.Size([2, 8, 8]))
    >>> g = GaussianBottleneck(n_dims=2, embedding_dim=4)
    >>> g.codebook_sizes, g(torch.randn(2, 4, 8, 8)).kl_loss.ndim
    ((), 0)
"""

from __future__ import annotations

import torch
from torch import nn

from ndvq import nd
from ndvq.errors import ConfigError
from ndvq.models.outputs import BottleneckOutput, GaussianLatent
from ndvq.objectives.kl import kl_divergence
from ndvq.quantizers import QUANTIZER_KINDS, build_quantizer

__all__ = ["BOTTLENECKS", "QuantizerBottleneck", "GaussianBottleneck", "build_bottleneck", "latent_scale_factor"]

#: every ``bottleneck`` name: the quantizer kinds and ``"gaussian"``.
BOTTLENECKS = (*QUANTIZER_KINDS, "gaussian")
_LOGVAR_RANGE = (-30.0, 20.0)


class QuantizerBottleneck(nn.Module):
    """A quantizer of :mod:`ndvq.quantizers` applied to channels-last tokens.

    Args:
        kind: ``"vq"``, ``"residual"``, ``"grouped"``, ``"fsq"``, ``"lfq"`` or ``"simvq"``.
        embedding_dim: token width ``D`` (in and out channels).
        n_codes: codes per codebook (FSQ: ignored, ``prod(fsq_levels)``; LFQ: a power of two).
        **quantizer_options: :func:`ndvq.quantizers.build_quantizer` options, including ``beta``
            (commitment weight, default 0.25) and ``ema_decay`` (default 0.99).

    Attributes:
        quantizer: the quantizer module.
        in_channels: channels read from the encoder (``embedding_dim``).
    """

    def __init__(self, kind: str, embedding_dim: int, n_codes: int, **quantizer_options) -> None:
        super().__init__()
        if kind not in QUANTIZER_KINDS:
            raise ConfigError(f"quantizer kind must be one of {QUANTIZER_KINDS}, got {kind!r}")
        self.kind, self.embedding_dim, self.in_channels = kind, embedding_dim, embedding_dim
        self.quantizer = build_quantizer(kind, embedding_dim, n_codes, **quantizer_options)

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """Codes per index column (asked of the quantizer)."""
        return self.quantizer.codebook_sizes

    @property
    def index_suffix(self) -> tuple[int, ...]:
        """Trailing shape of the indices beyond the latent grid: ``()`` or ``(G,)``."""
        return tuple(self.quantizer.index_suffix)

    def codebook_parameters(self) -> list[nn.Parameter]:
        """Parameters that get ``codebook_lr`` (empty for EMA codebooks)."""
        return list(self.quantizer.codebook_parameters())

    def forward(self, z: torch.Tensor) -> BottleneckOutput:
        """Quantize ``z [B, D, *L]``; the latent is the quantized ``[B, D, *L]``."""
        q = self.quantizer(nd.channels_last(z))  # tokens [B, *L, D]
        return BottleneckOutput(latent=nd.channels_first(q.quantized), aux_loss=q.loss,
                                commitment_loss=q.commitment_loss, perplexity=q.perplexity, usage=q.usage,
                                indices=q.indices, counts=q.counts, losses=dict(q.losses))

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """``z [B, D, *L]`` -> indices ``[B, *L(, G)]`` (eval mode: training updates the codebook)."""
        return self.forward(z).indices

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices ``[B, *L(, G)]`` -> code vectors ``[B, D, *L]``."""
        return nd.channels_first(self.quantizer.lookup(indices.long()))  # [B, *L, D] -> [B, D, *L]


class GaussianBottleneck(nn.Module):
    """Diagonal Gaussian posterior: 1x1 convolutions to the mean and the log-variance.

    The log-variance is clamped to ``[-30, 20]``; the latent is a sample in training and the mean
    in eval; ``kl_loss`` is the unweighted KL to ``N(0, I)`` (summed over latent dims, batch mean).

    Args:
        n_dims: spatial axes (1..3).
        embedding_dim: latent channels ``E``.
        in_channels: channels read from the encoder; None means ``embedding_dim`` (the MONAI /
            today's KLVAE layout: separate ``E -> E`` mean and log-variance convolutions). Default None.
    """

    def __init__(self, n_dims: int, embedding_dim: int, in_channels: int | None = None) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.in_channels = embedding_dim if in_channels is None else in_channels
        self.to_mean = nd.conv(n_dims, self.in_channels, embedding_dim, 1)
        self.to_logvar = nd.conv(n_dims, self.in_channels, embedding_dim, 1)

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """No codes: ``()``."""
        return ()

    def codebook_parameters(self) -> list[nn.Parameter]:
        """No codebook: ``[]``."""
        return []

    def encode(self, z: torch.Tensor) -> GaussianLatent:
        """``z [B, in_channels, *L]`` -> ``GaussianLatent(mean, std)``, each ``[B, E, *L]``."""
        logvar = self.to_logvar(z).clamp(*_LOGVAR_RANGE)
        return GaussianLatent(mean=self.to_mean(z), std=torch.exp(0.5 * logvar))

    def decode(self, latent: torch.Tensor | GaussianLatent) -> torch.Tensor:
        """A latent ``[B, E, *L]`` (a ``GaussianLatent`` gives its mean) -> ``[B, E, *L]``."""
        return latent.mean if isinstance(latent, GaussianLatent) else latent

    def forward(self, z: torch.Tensor) -> BottleneckOutput:
        """Posterior of ``z [B, in_channels, *L]``, its sample (training) or mean (eval), and the KL."""
        posterior = self.encode(z)
        latent = posterior.sample() if self.training else posterior.mean
        kl = kl_divergence(posterior.mean, posterior.std)
        return BottleneckOutput(latent=latent, aux_loss=kl.new_zeros(()), kl_loss=kl,
                                mean=posterior.mean, std=posterior.std)


def build_bottleneck(kind: str, n_dims: int, embedding_dim: int, n_codes: int,
                     quantizer: dict | None = None) -> nn.Module:
    """``GaussianBottleneck`` for ``"gaussian"`` (``n_codes``/``quantizer`` unused), else a
    ``QuantizerBottleneck`` with the ``quantizer`` options."""
    if kind not in BOTTLENECKS:
        raise ConfigError(f"bottleneck must be one of {BOTTLENECKS}, got {kind!r}")
    if kind == "gaussian":
        return GaussianBottleneck(n_dims, embedding_dim)
    return QuantizerBottleneck(kind, embedding_dim, n_codes, **(quantizer or {}))


def latent_scale_factor(means: torch.Tensor) -> float:
    """The ``scale_factor`` a latent diffusion model multiplies latents by: ``1 / std(means)``.

    Args:
        means: latent means of (a representative sample of) the data set, any shape, e.g. the
            concatenated ``model.encode(x).mean`` over the training split.

    Example:
        >>> round(latent_scale_factor(torch.full((4, 2), 3.0) + torch.tensor([1.0, -1.0])), 4)
        0.9354
    """
    if means.numel() < 2:
        raise ValueError(f"need at least 2 latent values to estimate a std, got {means.numel()}")
    std = means.detach().double().std().item()
    if not std > 0 or std != std:
        raise ValueError(f"latent std must be positive and finite, got {std}")
    return 1.0 / std
