"""``LDMBackbone``: the multi-level encoder/decoder of latent diffusion's autoencoders (LDM / MONAI style).

One code path for 1D, 2D and 3D. The encoder has one level per entry of ``channels`` with
``num_res_blocks`` GroupNorm/SiLU residual blocks, optional self-attention after each block of a
level and a stride-2 downsampling between levels, then an optional non-local
(residual-attention-residual) block and norm -> SiLU -> 3x3 conv to ``latent_channels``. The
decoder starts with a 1x1 ``post_conv`` on ``embedding_dim`` channels and mirrors the encoder with
nearest-neighbour upsampling.

With a quantizer the encoder output has ``embedding_dim`` channels (VQGAN's ``quant_conv`` folded
into the last conv); a Gaussian bottleneck reads ``latent_channels`` channels and maps them to the
mean and log-variance itself.

Example:
    >>> import torch
    >>> bb = LDMBackbone(n_dims=2, in_channels=1, out_channels=1, embedding_dim=4, channels=(8, 16),
    ...                  norm_num_groups=4)
    >>> z = bb.encode(torch.randn(2, 1, 32, 32))
    >>> z.shape, bb.decode(z).shape, bb.downsample
    (torch.Size([2, 4, 16, 16]), torch.Size([2, 1, 32, 32]), (2, 2))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ndvq import nd
from ndvq.errors import ConfigError

__all__ = ["LDMBackbone"]


def _norm(channels: int, groups: int, eps: float) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=eps, affine=True)


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with a 1x1 skip when the channel count changes."""

    def __init__(self, n_dims: int, c_in: int, c_out: int, groups: int, eps: float):
        super().__init__()
        self.norm1 = _norm(c_in, groups, eps)
        self.conv1 = nd.conv(n_dims, c_in, c_out, 3, padding=1)
        self.norm2 = _norm(c_out, groups, eps)
        self.conv2 = nd.conv(n_dims, c_out, c_out, 3, padding=1)
        self.skip = nd.conv(n_dims, c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class _Attention(nn.Module):
    """Single-head self-attention over all spatial positions (residual)."""

    def __init__(self, channels: int, groups: int, eps: float):
        super().__init__()
        self.norm = _norm(channels, groups, eps)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        h = self.norm(x).reshape(b, c, -1).transpose(1, 2)  # [B, C, *S] -> [B, N, C]
        q, k, v = self.qkv(h).unsqueeze(1).chunk(3, dim=-1)  # 3 x [B, 1, N, C]
        h = F.scaled_dot_product_attention(q, k, v).squeeze(1)  # [B, N, C]
        h = self.proj(h).transpose(1, 2).reshape(x.shape)  # [B, N, C] -> [B, C, *S]
        return x + h


class _Downsample(nn.Module):
    """Stride-2 3x3 conv with (0, 1) padding on every spatial axis (halves even sizes exactly)."""

    def __init__(self, n_dims: int, channels: int):
        super().__init__()
        self.n_dims = n_dims
        self.conv = nd.conv(n_dims, channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1) * self.n_dims))


class _Upsample(nn.Module):
    """Nearest-neighbour x2 followed by a 3x3 conv."""

    def __init__(self, n_dims: int, channels: int):
        super().__init__()
        self.conv = nd.conv(n_dims, channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _level(n_dims: int, c_in: int, c_out: int, n_blocks: int, attn: bool, groups: int, eps: float) -> list[nn.Module]:
    """``n_blocks`` residual blocks ``c_in -> c_out`` (each followed by attention when ``attn``)."""
    layers: list[nn.Module] = []
    if n_blocks == 0 and c_in != c_out:
        layers.append(nd.conv(n_dims, c_in, c_out, 1))
    for i in range(n_blocks):
        layers.append(_ResBlock(n_dims, c_in if i == 0 else c_out, c_out, groups, eps))
        if attn:
            layers.append(_Attention(c_out, groups, eps))
    return layers


def _nonlocal(n_dims: int, c: int, groups: int, eps: float) -> list[nn.Module]:
    return [_ResBlock(n_dims, c, c, groups, eps), _Attention(c, groups, eps), _ResBlock(n_dims, c, c, groups, eps)]


def _per_level(value, n_levels: int, name: str) -> list:
    """An int/bool for every level, or a list with one entry per level."""
    values = [value] * n_levels if isinstance(value, (int, bool)) else list(value)
    if len(values) != n_levels:
        raise ConfigError(f"{name} needs one entry per entry of channels ({n_levels}), got {len(values)}")
    return values


def _check_args(channels: list[int], num_res_blocks: list[int], norm_num_groups: int) -> None:
    if not channels or any(c < 1 for c in channels):
        raise ConfigError(f"channels must be a non-empty list of positive ints, got {channels}")
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in num_res_blocks):
        raise ConfigError(f"num_res_blocks must be ints >= 0 (one, or one per level), got {num_res_blocks}")
    if isinstance(norm_num_groups, bool) or not isinstance(norm_num_groups, int) or norm_num_groups < 1:
        raise ConfigError(f"norm_num_groups must be a positive int, got {norm_num_groups!r}")
    for c in channels:
        if c % norm_num_groups:
            raise ConfigError(f"norm_num_groups ({norm_num_groups}) must divide every entry of channels; "
                              f"{c} is not divisible by {norm_num_groups}")


class LDMBackbone(nn.Module):
    """Multi-level GroupNorm/SiLU encoder and decoder with optional attention.

    Args:
        n_dims: spatial axes (1..3).
        in_channels: input channels.
        out_channels: output channels of the decoder.
        embedding_dim: channels the decoder starts from (the bottleneck's output width).
        channels: channels per level; the input is downsampled by 2 between levels, so the latent
            is ``2 ** (len(channels) - 1)`` times smaller per axis. Default (64, 128, 256).
        num_res_blocks: residual blocks per level, an int or one per level (encoder and decoder). Default 2.
        norm_num_groups: GroupNorm groups; must divide every entry of ``channels``. Default 32.
        norm_eps: GroupNorm epsilon. Default 1e-6.
        attention_levels: self-attention after each residual block of a level, one bool per level;
            None means no attention. Default None.
        with_encoder_nonlocal_attn: residual-attention-residual block at the end of the encoder. Default True.
        with_decoder_nonlocal_attn: the same at the start of the decoder. Default True.
        latent_channels: channels of the encoder output (the bottleneck's input); None means
            ``embedding_dim``. Default None.

    Attributes:
        downsample: total downsampling per axis, ``n_dims`` ints.
        downsample_rule: how an input size must relate to ``downsample`` (for error messages).
    """

    def __init__(self, n_dims: int, in_channels: int, out_channels: int, embedding_dim: int,
                 channels: Sequence[int] = (64, 128, 256), num_res_blocks: int | Sequence[int] = 2,
                 norm_num_groups: int = 32, norm_eps: float = 1e-6, attention_levels: Sequence[bool] | None = None,
                 with_encoder_nonlocal_attn: bool = True, with_decoder_nonlocal_attn: bool = True,
                 latent_channels: int | None = None) -> None:
        super().__init__()
        nd.check_n_dims(n_dims)
        channels = [int(c) for c in channels]
        blocks = _per_level(num_res_blocks, len(channels), "num_res_blocks")
        _check_args(channels, blocks, norm_num_groups)
        attn = [bool(a) for a in _per_level(False if attention_levels is None else attention_levels,
                                             len(channels), "attention_levels")]
        factor = 2 ** (len(channels) - 1)
        self.downsample = (factor,) * n_dims
        self.downsample_rule = f"2**(len(channels)-1) = {factor}"
        self.latent_channels = embedding_dim if latent_channels is None else latent_channels
        self.embedding_dim = embedding_dim
        g, eps, last = norm_num_groups, norm_eps, len(channels) - 1

        enc: list[nn.Module] = [nd.conv(n_dims, in_channels, channels[0], 3, padding=1)]
        c_prev = channels[0]
        for i, c in enumerate(channels):
            enc += _level(n_dims, c_prev, c, blocks[i], attn[i], g, eps)
            if i != last:
                enc.append(_Downsample(n_dims, c))
            c_prev = c
        if with_encoder_nonlocal_attn:
            enc += _nonlocal(n_dims, channels[-1], g, eps)
        enc += [_norm(channels[-1], g, eps), nn.SiLU(),
                nd.conv(n_dims, channels[-1], self.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        self.post_conv = nd.conv(n_dims, embedding_dim, embedding_dim, 1)

        dec: list[nn.Module] = [nd.conv(n_dims, embedding_dim, channels[-1], 3, padding=1)]
        if with_decoder_nonlocal_attn:
            dec += _nonlocal(n_dims, channels[-1], g, eps)
        c_prev = channels[-1]
        for i in reversed(range(len(channels))):
            dec += _level(n_dims, c_prev, channels[i], blocks[i], attn[i], g, eps)
            if i != 0:
                dec.append(_Upsample(n_dims, channels[i]))
            c_prev = channels[i]
        dec += [_norm(channels[0], g, eps), nn.SiLU(), nd.conv(n_dims, channels[0], out_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, in_channels, *S] -> [B, latent_channels, *S / downsample]``."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z [B, embedding_dim, *L] -> [B, out_channels, *L * downsample]``."""
        return self.decoder(self.post_conv(z))
