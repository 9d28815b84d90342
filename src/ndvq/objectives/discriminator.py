"""A PatchGAN discriminator for any n_dims, with instance norm (no batch statistics, so DDP-safe).

Example:
    >>> import torch
    >>> from ndvq.objectives.discriminator import PatchDiscriminator
    >>> disc = PatchDiscriminator(n_dims=3, in_channels=1, channels=8, n_layers=2)
    >>> disc(torch.randn(2, 1, 32, 32, 32)).shape
    torch.Size([2, 1, 6, 6, 6])
"""

from __future__ import annotations

import torch
from torch import nn

from ndvq import nd
from ndvq.errors import ConfigError

__all__ = ["PatchDiscriminator"]


class PatchDiscriminator(nn.Module):
    """Fully convolutional discriminator that scores overlapping patches (pix2pix / taming style).

    ``n_layers`` stride-2 4x4 convolutions (channels doubling, capped at 8x), one stride-1 conv and
    a 1-channel stride-1 conv give one logit per patch: ``[B, 1, *P]``. Instance norm (affine) is
    used instead of batch norm, so the output of a sample never depends on the rest of its batch
    and no statistics need to be synchronised across processes.

    Args:
        n_dims: spatial axes (1..3). Default 2.
        in_channels: channels of the images judged. Default 1.
        channels: channels of the first layer. Default 64.
        n_layers: stride-2 layers; each halves the spatial size (receptive field grows). Default 3.

    Raises:
        ConfigError: ``n_layers < 1``; inputs smaller than ``3 * 2**n_layers`` (at call time).

    Example:
        >>> PatchDiscriminator(2, 3, channels=16)(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 1, 6, 6])
    """

    def __init__(self, n_dims: int = 2, in_channels: int = 1, channels: int = 64,
                 n_layers: int = 3):
        super().__init__()
        nd.check_n_dims(n_dims)
        if n_layers < 1:
            raise ConfigError(f"disc_layers must be >= 1, got {n_layers}")
        self.n_dims, self.in_channels = n_dims, in_channels
        self.n_layers = n_layers
        self.min_size = 3 * 2 ** n_layers  # smallest input giving >= 1 patch logit
        layers: list[nn.Module] = [nd.conv(n_dims, in_channels, channels, 4, stride=2, padding=1),
                                   nn.LeakyReLU(0.2)]
        c = channels
        for i in range(1, n_layers + 1):
            c_out = channels * min(2 ** i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nd.conv(n_dims, c, c_out, 4, stride=stride, padding=1, bias=False),
                       nd.norm("instance", n_dims, c_out), nn.LeakyReLU(0.2)]
            c = c_out
        layers.append(nd.conv(n_dims, c, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_channels, *S] -> [B, 1, *P]`` patch logits."""
        if x.ndim != self.n_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"discriminator expects [B, {self.in_channels}, *S] with {self.n_dims} spatial "
                f"dims, got {list(x.shape)}"
            )
        if min(x.shape[2:]) < self.min_size:
            raise ConfigError(
                f"discriminator with n_layers={self.n_layers} needs every spatial size >= "
                f"{self.min_size}, got {list(x.shape[2:])}; lower loss.disc_layers or use larger "
                "patches"
            )
        return self.net(x)
