"""Dimension-generic building blocks: one code path for 1D, 2D and 3D.

Every factory takes ``n_dims`` first and picks the matching ``torch.nn`` class, so
no module in ndvq ever names ``Conv2d`` directly.

Example:
    >>> import torch
    >>> from ndvq import nd
    >>> layer = nd.conv(3, 1, 8, kernel_size=3, padding=1)   # a Conv3d
    >>> layer(torch.zeros(2, 1, 4, 8, 8)).shape
    torch.Size([2, 8, 4, 8, 8])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "check_n_dims",
    "ntuple",
    "conv",
    "conv_transpose",
    "norm",
    "ChannelNorm",
    "channels_last",
    "channels_first",
    "is_power_of_two",
]


def check_n_dims(n_dims: int) -> int:
    """Validate ``n_dims`` (1, 2 or 3) and return it as an int."""
    if isinstance(n_dims, bool) or not isinstance(n_dims, int) or not 1 <= n_dims <= 3:
        raise ValueError(f"n_dims must be 1, 2 or 3, got {n_dims!r}")
    return n_dims


def ntuple(value: int | Sequence[int], n: int, name: str = "value") -> tuple[int, ...]:
    """Expand an int to an ``n``-tuple, or check a sequence has length ``n``.

    Args:
        value: an int (repeated ``n`` times) or a sequence of ``n`` ints.
        n: the required length.
        name: the argument's name, used in the error message.

    Example:
        >>> ntuple(4, 2)
        (4, 4)
        >>> ntuple([1, 4, 4], 3)
        (1, 4, 4)
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * n
    try:
        out = tuple(int(v) for v in value)
    except TypeError:
        raise TypeError(f"{name} must be an int or a sequence of {n} ints, got {value!r}") from None
    if len(out) != n:
        raise ValueError(f"{name} must have {n} entries (one per spatial axis), got {len(out)}: {list(out)}")
    return out


def is_power_of_two(v: int) -> bool:
    """True for 1, 2, 4, 8, ..."""
    return v >= 1 and (v & (v - 1)) == 0


def conv(n_dims: int, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=0,
         bias: bool = True, **kwargs) -> nn.Module:
    """``nn.Conv{n_dims}d`` with the given arguments (``kernel_size``/``stride``/``padding`` int or per-axis)."""
    cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[check_n_dims(n_dims) - 1]
    return cls(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias, **kwargs)


def conv_transpose(n_dims: int, in_channels: int, out_channels: int, kernel_size=4, stride=2, padding=1,
                   bias: bool = True, **kwargs) -> nn.Module:
    """``nn.ConvTranspose{n_dims}d`` with the given arguments."""
    cls = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[check_n_dims(n_dims) - 1]
    return cls(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias, **kwargs)


def norm(kind: str, n_dims: int, channels: int, num_groups: int = 32, eps: float = 1e-5) -> nn.Module:
    """A normalisation layer over ``channels`` for ``n_dims`` spatial axes.

    Args:
        kind: ``"batch"`` (BatchNorm{n}d), ``"group"`` (GroupNorm), ``"channel"`` (:class:`ChannelNorm`:
            layer norm over each position's channels), ``"instance"`` (InstanceNorm{n}d, affine) or
            ``"none"`` (identity).
        n_dims: number of spatial axes (1..3).
        channels: number of channels normalised.
        num_groups: groups for ``"group"``; the largest divisor of ``channels`` that is
            ``<= num_groups`` is used, so any channel count works. Default 32.
        eps: numerical epsilon. Default 1e-5.
    """
    check_n_dims(n_dims)
    if kind == "batch":
        return (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[n_dims - 1](channels, eps=eps)
    if kind == "group":
        groups = max(g for g in range(1, min(num_groups, channels) + 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels, eps=eps)
    if kind == "instance":
        return (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)[n_dims - 1](channels, eps=eps, affine=True)
    if kind == "channel":
        return ChannelNorm(channels, eps=eps)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of 'batch', 'group', 'channel', 'instance', 'none', got {kind!r}")


class ChannelNorm(nn.LayerNorm):
    """Layer norm over the channels at every position: ``[B, C, *S] -> [B, C, *S]``.

    Its statistics are one token's own channels, so a model normalises a 32x32 crop and a whole image
    alike and behaves the same in training and in eval (no running statistics, no spatial pooling).

    Args:
        channels: channels normalised.
        eps: numerical epsilon. Default 1e-5.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)  # [B, C, *S] -> [B, *S, C] -> back


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, *S] -> [B, *S, C]`` (a view; no copy)."""
    return x.movedim(1, -1)


def channels_first(x: torch.Tensor) -> torch.Tensor:
    """``[B, *S, C] -> [B, C, *S]`` (a view; no copy)."""
    return x.movedim(-1, 1)


def log2_int(v: int) -> int:
    """Exact base-2 logarithm of a power of two."""
    return int(round(math.log2(v)))
