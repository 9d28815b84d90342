"""``LDMBackbone``: the encoder/decoder of MONAI's ``AutoencoderKL`` (latent diffusion's autoencoder).

Layer for layer the stack of ``monai.networks.nets.AutoencoderKL`` (MONAI >= 1.4), for 1D, 2D and
3D: the encoder is a 3x3 conv, then per level ``num_res_blocks[i]`` GroupNorm/SiLU residual blocks
(each followed by single-head self-attention when ``attention_levels[i]``) and a stride-2
downsampling between levels, an optional non-local residual-attention-residual block, and
GroupNorm -> 3x3 conv to ``latent_channels`` (no activation in between, as MONAI). The decoder
starts with a 1x1 ``post_conv`` (MONAI's ``post_quant_conv``), a 3x3 conv, the non-local block, and
mirrors the levels with nearest-neighbour x2 + 3x3 conv upsampling (or a 2x2 transposed conv with
``use_convtranspose``). :mod:`ndvq.models.monai` converts state dicts to and from MONAI's names.

Options ndvq has that MONAI lacks keep MONAI's behaviour by default: ``final_activation`` (a SiLU
between the last GroupNorm and conv, which ndvq used before it matched MONAI; old weights turn it
on by themselves when loaded) and a 1x1 conv for a level with 0 residual blocks that changes the
channel count (MONAI cannot build that case).

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
from ndvq.models.backbones.checkpointing import run_blocks

__all__ = ["LDMBackbone", "ResBlock", "SpatialAttention", "Downsample", "Upsample"]


def _norm(channels: int, groups: int, eps: float) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=eps, affine=True)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with a 1x1 ``nin_shortcut`` when the channel count changes (MONAI's ``AEKLResBlock``)."""

    def __init__(self, n_dims: int, c_in: int, c_out: int, groups: int, eps: float):
        super().__init__()
        self.norm1 = _norm(c_in, groups, eps)
        self.conv1 = nd.conv(n_dims, c_in, c_out, 3, padding=1)
        self.norm2 = _norm(c_out, groups, eps)
        self.conv2 = nd.conv(n_dims, c_out, c_out, 3, padding=1)
        self.nin_shortcut = nd.conv(n_dims, c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.nin_shortcut(x) + h


class SpatialAttention(nn.Module):
    """Single-head self-attention over all spatial positions, residual (MONAI's ``SpatialAttentionBlock``).

    Args:
        channels: channels ``C``.
        groups, eps: GroupNorm groups and epsilon.
        include_fc: an output projection ``out_proj``. Default True.
        use_combined_linear: one ``qkv`` projection instead of ``to_q``/``to_k``/``to_v``. Default False.
        use_flash_attention: ``F.scaled_dot_product_attention`` instead of the explicit softmax. Default False.
    """

    def __init__(self, channels: int, groups: int, eps: float, include_fc: bool = True,
                 use_combined_linear: bool = False, use_flash_attention: bool = False):
        super().__init__()
        self.norm = _norm(channels, groups, eps)
        self.use_combined_linear, self.use_flash_attention = use_combined_linear, use_flash_attention
        if use_combined_linear:
            self.qkv = nn.Linear(channels, 3 * channels)
        else:
            self.to_q, self.to_k, self.to_v = (nn.Linear(channels, channels) for _ in range(3))
        self.out_proj = nn.Linear(channels, channels) if include_fc else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        h = self.norm(x).reshape(b, c, -1).transpose(1, 2)  # [B, C, *S] -> [B, N, C]
        if self.use_combined_linear:
            q, k, v = self.qkv(h).unsqueeze(1).chunk(3, dim=-1)  # 3 x [B, 1, N, C]
        else:
            q, k, v = (f(h).unsqueeze(1) for f in (self.to_q, self.to_k, self.to_v))  # 3 x [B, 1, N, C]
        if self.use_flash_attention:
            h = F.scaled_dot_product_attention(q, k, v, scale=c ** -0.5)
        else:
            w = torch.einsum("blxd,blyd->blxy", q, k) * c ** -0.5  # [B, 1, N, N]
            h = torch.einsum("bhxy,bhyd->bhxd", w.softmax(dim=-1), v)
        h = self.out_proj(h.squeeze(1)).transpose(1, 2).reshape(x.shape)  # [B, N, C] -> [B, C, *S]
        return x + h


class Downsample(nn.Module):
    """Stride-2 3x3 conv after a (0, 1) zero pad on every spatial axis (halves even sizes exactly)."""

    def __init__(self, n_dims: int, channels: int):
        super().__init__()
        self.n_dims = n_dims
        self.conv = nd.conv(n_dims, channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1) * self.n_dims))


class Upsample(nn.Module):
    """x2 upsampling: nearest neighbour + 3x3 ``conv`` (MONAI's ``postconv``), or a 2x2 stride-2
    transposed ``deconv`` when ``transpose``."""

    def __init__(self, n_dims: int, channels: int, transpose: bool = False):
        super().__init__()
        if transpose:
            self.deconv = nd.conv_transpose(n_dims, channels, channels, 2, stride=2, padding=0)
        else:
            self.conv = nd.conv(n_dims, channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "deconv"):
            return self.deconv(x)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


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
    """MONAI ``AutoencoderKL``'s encoder and decoder (GroupNorm/SiLU residual blocks, optional attention).

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
        use_convtranspose: upsample with 2x2 transposed convs instead of nearest + conv (MONAI). Default False.
        include_fc: output projection in the attention blocks (MONAI). None = True. Default None.
        use_combined_linear: one qkv projection in the attention blocks (MONAI). None = False. Default None.
        use_flash_attention: fused scaled-dot-product attention (MONAI). None = False. Default None.
        final_activation: a SiLU between the last GroupNorm and conv of encoder and decoder (ndvq
            before it matched MONAI; MONAI has none). None = False. Default None.

    ``None`` for the MONAI switches means MONAI's default, so configs and checkpoints that predate
    them keep meaning the same network.

    Attributes:
        downsample: total downsampling per axis, ``n_dims`` ints.
        downsample_rule: how an input size must relate to ``downsample`` (for error messages).
        activation_checkpointing: recompute each block's activations in the backward pass (see
            :meth:`set_activation_checkpointing`). Default False.
    """

    def __init__(self, n_dims: int, in_channels: int, out_channels: int, embedding_dim: int,
                 channels: Sequence[int] = (64, 128, 256), num_res_blocks: int | Sequence[int] = 2,
                 norm_num_groups: int = 32, norm_eps: float = 1e-6, attention_levels: Sequence[bool] | None = None,
                 with_encoder_nonlocal_attn: bool = True, with_decoder_nonlocal_attn: bool = True,
                 latent_channels: int | None = None, use_convtranspose: bool | None = None,
                 include_fc: bool | None = None, use_combined_linear: bool | None = None,
                 use_flash_attention: bool | None = None, final_activation: bool | None = None) -> None:
        super().__init__()
        nd.check_n_dims(n_dims)
        channels = [int(c) for c in channels]
        blocks = _per_level(num_res_blocks, len(channels), "num_res_blocks")
        _check_args(channels, blocks, norm_num_groups)
        attn = [bool(a) for a in _per_level(False if attention_levels is None else attention_levels,
                                             len(channels), "attention_levels")]
        factor = 2 ** (len(channels) - 1)
        self.n_dims, self.downsample = n_dims, (factor,) * n_dims
        self.downsample_rule = f"2**(len(channels)-1) = {factor}"
        self.latent_channels = embedding_dim if latent_channels is None else latent_channels
        self.embedding_dim = embedding_dim
        self.activation_checkpointing = False
        self._attn_args = dict(include_fc=include_fc is not False, use_combined_linear=bool(use_combined_linear),
                               use_flash_attention=bool(use_flash_attention))
        self._g, self._eps = norm_num_groups, norm_eps
        self.encoder = nn.Sequential(*self._encoder_layers(in_channels, channels, blocks, attn,
                                                           with_encoder_nonlocal_attn))
        self.post_conv = nd.conv(n_dims, embedding_dim, embedding_dim, 1)
        self.decoder = nn.Sequential(*self._decoder_layers(out_channels, channels, blocks, attn,
                                                           with_decoder_nonlocal_attn, bool(use_convtranspose)))
        self.set_final_activation(bool(final_activation))
        self._register_load_state_dict_pre_hook(_legacy_ndvq_keys, with_module=True)

    # ------------------------------------------------------------------ construction
    def _attention(self, c: int) -> SpatialAttention:
        return SpatialAttention(c, self._g, self._eps, **self._attn_args)

    def _level(self, c_in: int, c_out: int, n_blocks: int, attn: bool) -> list[nn.Module]:
        """``n_blocks`` residual blocks ``c_in -> c_out`` (each followed by attention when ``attn``)."""
        layers: list[nn.Module] = []
        if n_blocks == 0 and c_in != c_out:  # ndvq only: MONAI cannot build this case
            layers.append(nd.conv(self.n_dims, c_in, c_out, 1))
        for i in range(n_blocks):
            layers.append(ResBlock(self.n_dims, c_in if i == 0 else c_out, c_out, self._g, self._eps))
            if attn:
                layers.append(self._attention(c_out))
        return layers

    def _nonlocal(self, c: int) -> list[nn.Module]:
        return [ResBlock(self.n_dims, c, c, self._g, self._eps), self._attention(c),
                ResBlock(self.n_dims, c, c, self._g, self._eps)]

    def _encoder_layers(self, in_channels, channels, blocks, attn, nonlocal_attn) -> list[nn.Module]:
        layers: list[nn.Module] = [nd.conv(self.n_dims, in_channels, channels[0], 3, padding=1)]
        c_prev = channels[0]
        for i, c in enumerate(channels):
            layers += self._level(c_prev, c, blocks[i], attn[i])
            if i != len(channels) - 1:
                layers.append(Downsample(self.n_dims, c))
            c_prev = c
        if nonlocal_attn:
            layers += self._nonlocal(channels[-1])
        # the Identity is the slot of the optional final activation (keeps the conv's index fixed)
        return layers + [_norm(channels[-1], self._g, self._eps), nn.Identity(),
                         nd.conv(self.n_dims, channels[-1], self.latent_channels, 3, padding=1)]

    def _decoder_layers(self, out_channels, channels, blocks, attn, nonlocal_attn, transpose) -> list[nn.Module]:
        layers: list[nn.Module] = [nd.conv(self.n_dims, self.embedding_dim, channels[-1], 3, padding=1)]
        if nonlocal_attn:
            layers += self._nonlocal(channels[-1])
        c_prev = channels[-1]
        for i in reversed(range(len(channels))):
            layers += self._level(c_prev, channels[i], blocks[i], attn[i])
            if i != 0:
                layers.append(Upsample(self.n_dims, channels[i], transpose))
            c_prev = channels[i]
        return layers + [_norm(channels[0], self._g, self._eps), nn.Identity(),
                         nd.conv(self.n_dims, channels[0], out_channels, 3, padding=1)]

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight of the decoder's last conv (for VQGAN's adaptive adversarial weight)."""
        return self.decoder[len(self.decoder) - 1].weight

    # ------------------------------------------------------------------ switches
    def set_final_activation(self, enabled: bool) -> None:
        """Put a SiLU (``enabled``) or nothing between the last GroupNorm and conv of both stacks."""
        self.final_activation = bool(enabled)
        for stack in (self.encoder, self.decoder):
            stack[len(stack) - 2] = nn.SiLU() if enabled else nn.Identity()

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them (MONAI's
        ``use_checkpoint``): less memory for about one more forward pass."""
        self.activation_checkpointing = bool(enabled)

    # ------------------------------------------------------------------ forward
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, in_channels, *S] -> [B, latent_channels, *S / downsample]``."""
        return run_blocks(self.encoder, x, self.activation_checkpointing)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z [B, embedding_dim, *L] -> [B, out_channels, *L * downsample]``."""
        return run_blocks(self.decoder, self.post_conv(z), self.activation_checkpointing)


def _legacy_ndvq_keys(module: LDMBackbone, state_dict: dict, prefix: str, *args) -> None:
    """Rename the weights of ndvq's earlier LDM layout (``skip``, attention ``qkv`` + ``proj``, a SiLU
    before the last convs) to today's names, and switch the final SiLU on when they are seen."""
    old_attn = [k[:-len("proj.weight")] for k in state_dict
                if k.startswith(prefix) and k.endswith(".proj.weight") and not k.endswith("out_proj.weight")]
    old_skip = [k for k in state_dict if k.startswith(prefix) and ".skip." in k]
    if not old_attn and not old_skip:
        return
    for key in old_skip:
        state_dict[key.replace(".skip.", ".nin_shortcut.")] = state_dict.pop(key)
    combined = module._attn_args["use_combined_linear"]
    for p in old_attn:
        for kind in ("weight", "bias"):
            state_dict[f"{p}out_proj.{kind}"] = state_dict.pop(f"{p}proj.{kind}")
            if not combined and f"{p}qkv.{kind}" in state_dict:
                q, k, v = state_dict.pop(f"{p}qkv.{kind}").chunk(3, dim=0)
                state_dict.update({f"{p}to_q.{kind}": q, f"{p}to_k.{kind}": k, f"{p}to_v.{kind}": v})
    module.set_final_activation(True)
