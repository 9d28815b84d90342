"""Dimension-generic encoder and decoder of the VQ-VAE (VideoGPT / ``nd_vq_vae`` layer pattern).

Encoder: ``log2(max(downsample))`` strided convolutions (kernel 4, stride 2 on the axes that still
need shrinking, 1 elsewhere, "same" padding, ReLU), ``conv_last`` (kernel 3), then ``num_res_blocks``
attention residual blocks. Decoder: the residual stack, norm + ReLU, then one transposed
convolution (kernel 4) per upsampling step. The layers are those of the reference package, so
speed comparisons against it compare the same architecture; what differs is that everything is
sized from its arguments (channels, per-axis factors, latent shape), attention runs on
channels-last tokens and normalisation, dropout and attention are configurable.

Every block takes ``n_dims`` first; no module here names a 1D/2D/3D class.

Example:
    >>> import torch
    >>> enc = Encoder(n_dims=3, in_channels=1, n_hiddens=32, num_res_blocks=1, downsample=(1, 4, 4))
    >>> enc(torch.randn(2, 1, 4, 32, 32)).shape
    torch.Size([2, 32, 4, 8, 8])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ndvq import nd
from ndvq.errors import ConfigError
from ndvq.models.backbones.attention import ATTN_TYPES, NDimAttention
from ndvq.models.backbones.checkpointing import run_blocks

__all__ = [
    "check_downsample",
    "downsample_steps",
    "SamePadConv",
    "SamePadConvTranspose",
    "ResidualBlock",
    "Encoder",
    "Decoder",
    "NORMS",
]

NORMS = ("batch", "group", "channel")
_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}  # input ndim -> memory format


def check_downsample(downsample: int | Sequence[int], n_dims: int, name: str = "downsample") -> tuple[int, ...]:
    """Per-axis factors as an ``n_dims``-tuple of powers of two (an int or a 1-entry list is
    repeated for every axis). Raises ``ConfigError`` (a ``ValueError``) naming the bad value.

    Example:
        >>> check_downsample([4], 2), check_downsample((1, 4, 4), 3)
        ((4, 4), (1, 4, 4))
    """
    nd.check_n_dims(n_dims)
    if not isinstance(downsample, int) and not isinstance(downsample, bool):
        try:
            downsample = list(downsample)
        except TypeError:
            raise TypeError(f"{name} must be an int or a list of ints, got {downsample!r}") from None
        if len(downsample) == 1:
            downsample = downsample[0]
    factors = nd.ntuple(downsample, n_dims, name)
    bad = [f for f in factors if not nd.is_power_of_two(f)]
    if bad:
        raise ConfigError(f"{name} factors must be powers of two (1, 2, 4, 8, ...), got {list(factors)}")
    return factors


def downsample_steps(factors: Sequence[int]) -> list[tuple[int, ...]]:
    """Per-step strides: ``(4, 1, 2) -> [(2, 1, 2), (2, 1, 1)]`` (stride 2 while an axis still needs it)."""
    remaining = [nd.log2_int(f) for f in factors]
    steps = []
    while max(remaining, default=0) > 0:
        steps.append(tuple(2 if r > 0 else 1 for r in remaining))
        remaining = [max(0, r - 1) for r in remaining]
    return steps


def _same_pads(kernel: Sequence[int], stride: Sequence[int]) -> list[tuple[int, int]]:
    """(left, right) padding per axis so that ``out = ceil(in / stride)``; the odd pixel goes left (as VideoGPT)."""
    return [((k - s) // 2 + (k - s) % 2, (k - s) // 2) for k, s in zip(kernel, stride)]


class SamePadConv(nn.Module):
    """Convolution with "same" padding: ``[B, C_in, *S] -> [B, C_out, *S / stride]``.

    Symmetric padding goes into the convolution; only axes with an odd total padding (kernel 4,
    stride 1) get one extra zero on the left through ``F.pad``.

    Args:
        n_dims: spatial axes (1..3).
        in_channels, out_channels: channel counts.
        kernel_size: int or per-axis. Default 3.
        stride: int or per-axis. Default 1.
        bias: add a bias. Default True.
    """

    def __init__(self, n_dims: int, in_channels: int, out_channels: int, kernel_size=3, stride=1,
                 bias: bool = True) -> None:
        super().__init__()
        kernel, stride = nd.ntuple(kernel_size, n_dims, "kernel_size"), nd.ntuple(stride, n_dims, "stride")
        pads = _same_pads(kernel, stride)
        self.conv = nd.conv(n_dims, in_channels, out_channels, kernel, stride=stride,
                            padding=tuple(r for _, r in pads), bias=bias)
        extra = [(left - right, 0) for left, right in pads]
        self.extra_pad = tuple(p for lr in reversed(extra) for p in lr) if any(e for e, _ in extra) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.extra_pad is not None:
            x = F.pad(x, self.extra_pad)
        return self.conv(x)


class SamePadConvTranspose(nn.Module):
    """Transposed convolution with "same" padding: ``[B, C_in, *S] -> [B, C_out, *S * stride]``
    (the reference's pad-then-crop, done as symmetric ``padding`` plus a crop on odd axes).

    Args:
        n_dims: spatial axes (1..3).
        in_channels, out_channels: channel counts.
        kernel_size: int or per-axis. Default 4.
        stride: int or per-axis. Default 2.
        bias: add a bias. Default True.
    """

    def __init__(self, n_dims: int, in_channels: int, out_channels: int, kernel_size=4, stride=2,
                 bias: bool = True) -> None:
        super().__init__()
        kernel, stride = nd.ntuple(kernel_size, n_dims, "kernel_size"), nd.ntuple(stride, n_dims, "stride")
        # equivalent of F.pad(x, same_pads) + ConvTranspose(padding=k-1): crop k-1-pad*s per side
        crops = [(k - 1 - pl * s, k - 1 - pr * s) for (pl, pr), k, s in zip(_same_pads(kernel, stride), kernel, stride)]
        self.convt = nd.conv_transpose(n_dims, in_channels, out_channels, kernel, stride=stride,
                                       padding=tuple(min(c) for c in crops), bias=bias)
        self.crops = [(left - min(left, right), right - min(left, right)) for left, right in crops]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convt(x)
        for axis, (left, right) in enumerate(self.crops):
            if left or right:
                y = y.narrow(2 + axis, left, y.shape[2 + axis] - left - right)
        return y


class ResidualBlock(nn.Module):
    """Attention residual block: ``x + attn(relu(norm(conv1x1(drop(relu(norm(conv3x3(relu(norm(x))))))))))``.

    Args:
        n_dims: spatial axes (1..3).
        channels: channels in and out (the bottleneck has ``channels // 2``).
        norm: ``"channel"`` (layer norm over each position's channels: no running statistics, the same on a
            crop and on a whole image), ``"batch"`` or ``"group"``. Default ``"channel"``.
        norm_num_groups: groups for group norm (largest divisor of the channels <= this). Default 32.
        dropout: dropout inside the block while training. Default 0.0.
        n_head: attention heads; 0 turns attention off. Default 2.
        attn_type: ``"axial"`` or ``"full"``. Default ``"axial"``.
        attn_dropout: dropout on the attention weights. Default 0.0.
    """

    def __init__(self, n_dims: int, channels: int, norm: str = "channel", norm_num_groups: int = 32,
                 dropout: float = 0.0, n_head: int = 2, attn_type: str = "axial", attn_dropout: float = 0.0) -> None:
        super().__init__()
        mid = max(1, channels // 2)
        # in-place ReLUs: each acts on a fresh norm output that its norm's backward does not read (no
        # extra tensor allocated and written per activation: ~7% less CPU time per step, docs/benchmarks.md)
        self.block = nn.Sequential(
            nd.norm(norm, n_dims, channels, norm_num_groups), nn.ReLU(inplace=True),
            SamePadConv(n_dims, channels, mid, 3, bias=False),
            nd.norm(norm, n_dims, mid, norm_num_groups), nn.ReLU(inplace=True),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            SamePadConv(n_dims, mid, channels, 1, bias=False),
            nd.norm(norm, n_dims, channels, norm_num_groups), nn.ReLU(inplace=True),
        )
        self.attn = NDimAttention(n_dims, channels, n_head, attn_type, attn_dropout) if n_head > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block(x)
        if self.attn is not None:
            h = nd.channels_first(self.attn(nd.channels_last(h)))  # [B, C, *S] -> [B, *S, C] -> back
        return x + h


def _check_block_args(n_hiddens: int, num_res_blocks: int, *, norm: str, norm_num_groups: int, dropout: float,
                      n_head: int, attn_type: str, attn_dropout: float) -> None:
    if isinstance(n_hiddens, bool) or not isinstance(n_hiddens, int) or n_hiddens < 2:
        raise ConfigError(f"n_hiddens must be an int >= 2, got {n_hiddens!r}")
    if isinstance(num_res_blocks, bool) or not isinstance(num_res_blocks, int) or num_res_blocks < 0:
        raise ConfigError(f"num_res_blocks must be an int >= 0, got {num_res_blocks!r}")
    if isinstance(norm_num_groups, bool) or not isinstance(norm_num_groups, int) or norm_num_groups < 1:
        raise ConfigError(f"norm_num_groups must be an int >= 1, got {norm_num_groups!r}")
    if norm not in NORMS:
        raise ConfigError(f"norm must be one of {NORMS}, got {norm!r}")
    if attn_type not in ATTN_TYPES:
        raise ConfigError(f"attn_type must be one of {ATTN_TYPES}, got {attn_type!r}")
    if n_head < 0 or (n_head and n_hiddens % n_head):
        raise ConfigError(f"n_hiddens ({n_hiddens}) must be divisible by n_head ({n_head}); n_head=0 turns attention off")
    for name, p in (("dropout", dropout), ("attn_dropout", attn_dropout)):
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {p}")


class Encoder(nn.Module):
    """``[B, in_channels, *S] -> [B, n_hiddens, *S / downsample]``.

    Args:
        n_dims: spatial axes (1..3).
        in_channels: input channels.
        n_hiddens: hidden channels. Default 128.
        num_res_blocks: attention residual blocks. Default 2.
        downsample: per-axis powers of two (int, 1 entry, or ``n_dims`` entries). Default 4.
        norm, norm_num_groups, dropout, n_head, attn_type, attn_dropout: see :class:`ResidualBlock`.
    """

    def __init__(self, n_dims: int, in_channels: int, n_hiddens: int = 128, num_res_blocks: int = 2,
                 downsample: int | Sequence[int] = 4, norm: str = "channel", norm_num_groups: int = 32,
                 dropout: float = 0.0, n_head: int = 2, attn_type: str = "axial", attn_dropout: float = 0.0) -> None:
        super().__init__()
        _check_block_args(n_hiddens, num_res_blocks, norm=norm, norm_num_groups=norm_num_groups, dropout=dropout,
                          n_head=n_head, attn_type=attn_type, attn_dropout=attn_dropout)
        self.downsample = check_downsample(downsample, n_dims)
        c = in_channels
        self.convs = nn.ModuleList()
        for stride in downsample_steps(self.downsample):
            self.convs.append(SamePadConv(n_dims, c, n_hiddens, 4, stride=stride))
            c = n_hiddens
        self.conv_last = SamePadConv(n_dims, c, n_hiddens, 3)
        self.res_stack = nn.Sequential(*[
            ResidualBlock(n_dims, n_hiddens, norm, norm_num_groups, dropout, n_head, attn_type, attn_dropout)
            for _ in range(num_res_blocks)
        ])
        self.activation_checkpointing = False  # recompute the residual blocks' activations in backward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last layout for 2D/3D: oneDNN convolutions run faster on it, and the channels-last
        # token views taken for attention and the quantizer need no copy (measured in docs/benchmarks.md)
        h = x.contiguous(memory_format=_CHANNELS_LAST[x.ndim]) if x.ndim in _CHANNELS_LAST else x
        for conv in self.convs:
            h = F.relu(conv(h), inplace=True)  # a convolution's backward does not read its output
        return run_blocks(self.res_stack, self.conv_last(h), self.activation_checkpointing)


class Decoder(nn.Module):
    """``[B, n_hiddens, *L] -> [B, out_channels, *L * upsample]``.

    Args:
        n_dims: spatial axes (1..3).
        out_channels: output channels.
        n_hiddens: hidden channels (also the input channels). Default 128.
        num_res_blocks: attention residual blocks. Default 2.
        upsample: per-axis powers of two (int, 1 entry, or ``n_dims`` entries). Default 4. With no
            upsampling at all the last layer is a kernel-3 convolution.
        norm, norm_num_groups, dropout, n_head, attn_type, attn_dropout: see :class:`ResidualBlock`.
    """

    def __init__(self, n_dims: int, out_channels: int, n_hiddens: int = 128, num_res_blocks: int = 2,
                 upsample: int | Sequence[int] = 4, norm: str = "channel", norm_num_groups: int = 32,
                 dropout: float = 0.0, n_head: int = 2, attn_type: str = "axial", attn_dropout: float = 0.0) -> None:
        super().__init__()
        _check_block_args(n_hiddens, num_res_blocks, norm=norm, norm_num_groups=norm_num_groups, dropout=dropout,
                          n_head=n_head, attn_type=attn_type, attn_dropout=attn_dropout)
        self.upsample = check_downsample(upsample, n_dims, "upsample")
        self.res_stack = nn.Sequential(
            *[ResidualBlock(n_dims, n_hiddens, norm, norm_num_groups, dropout, n_head, attn_type, attn_dropout)
              for _ in range(num_res_blocks)],
            nd.norm(norm, n_dims, n_hiddens, norm_num_groups), nn.ReLU(inplace=True),
        )
        self.activation_checkpointing = False  # recompute the residual blocks' activations in backward
        steps = downsample_steps(self.upsample)
        self.convts = nn.ModuleList()
        for i, stride in enumerate(steps):
            c_out = out_channels if i == len(steps) - 1 else n_hiddens
            self.convts.append(SamePadConvTranspose(n_dims, n_hiddens, c_out, 4, stride=stride))
        if not steps:
            self.convts.append(SamePadConv(n_dims, n_hiddens, out_channels, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = run_blocks(self.res_stack, x, self.activation_checkpointing)
        for i, convt in enumerate(self.convts):
            h = convt(h)
            if i < len(self.convts) - 1:
                h = F.relu(h, inplace=True)
        return h.contiguous()  # the usual [B, C, *S] layout for whoever reads the reconstruction
