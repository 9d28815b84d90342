"""A continuous KL-regularised autoencoder (the "AutoencoderKL" of latent diffusion), any n_dims.

One code path for 1D, 2D and 3D: the encoder has one level per entry of ``channels`` with
``num_res_blocks`` GroupNorm/SiLU residual blocks, optional self-attention per level and a
stride-2 downsampling between levels; an optional non-local (residual-attention-residual)
bottleneck; and a diagonal Gaussian latent with ``latent_channels`` channels. The decoder mirrors
it with nearest-neighbour upsampling.

Example:
    >>> import torch
    >>> from ndvq.networks.klvae import KLVAE
    >>> model = KLVAE(n_dims=2, in_channels=1, channels=(8, 16), norm_num_groups=4,
    ...               attention_levels=(False, False))
    >>> out = model(torch.randn(2, 1, 32, 32))
    >>> out.reconstruction.shape, out.mean.shape
    (torch.Size([2, 1, 32, 32]), torch.Size([2, 4, 16, 16]))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ndvq import nd
from ndvq.losses.kl import kl_divergence
from ndvq.losses.reconstruction import reconstruction_loss
from ndvq.networks.pretrained import PretrainedMixin

__all__ = ["KLVAE", "KLVAEOutput", "GaussianLatent", "latent_scale_factor"]

_LOGVAR_RANGE = (-30.0, 20.0)


@dataclass
class GaussianLatent:
    """The diagonal Gaussian posterior returned by :meth:`KLVAE.encode`.

    Attributes:
        mean: ``[B, latent_channels, *latent_shape]``.
        std: same shape, positive.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """``mean + std * eps`` with ``eps ~ N(0, I)``."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps


@dataclass
class KLVAEOutput:
    """What :meth:`KLVAE.forward` returns.

    Attributes:
        reconstruction: ``[B, out_channels, *S]``.
        loss: ``recon_loss + kl_weight * kl_loss`` (scalar, differentiable).
        recon_loss: mean L1 or squared error between input and reconstruction.
        kl_loss: ``KL(q(z|x) || N(0, I))`` summed over all latent dims, averaged over the batch.
        mean: posterior mean ``[B, latent_channels, *latent_shape]``.
        std: posterior standard deviation, same shape.
    """

    reconstruction: torch.Tensor
    loss: torch.Tensor
    recon_loss: torch.Tensor
    kl_loss: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def scalars(self) -> dict[str, torch.Tensor]:
        """Detached scalars to log: ``loss``, ``recon_loss``, ``kl_loss``, ``latent_std``."""
        return {
            "loss": self.loss.detach(),
            "recon_loss": self.recon_loss.detach(),
            "kl_loss": self.kl_loss.detach(),
            "latent_std": self.mean.detach().float().std(),
        }


def latent_scale_factor(means: torch.Tensor) -> float:
    """The ``scale_factor`` a latent diffusion model multiplies latents by: ``1 / std(means)``.

    Args:
        means: latent means of (a representative sample of) the data set, any shape, e.g. the
            concatenated ``KLVAE.encode(x).mean`` over the training split.

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


def _bottleneck(n_dims: int, c: int, groups: int, eps: float) -> list[nn.Module]:
    return [_ResBlock(n_dims, c, c, groups, eps), _Attention(c, groups, eps), _ResBlock(n_dims, c, c, groups, eps)]


class KLVAE(PretrainedMixin, nn.Module):
    """Continuous KL-regularised autoencoder for 1D, 2D and 3D data.

    Args:
        n_dims: spatial axes (1 series/audio, 2 images, 3 volumes/video). Default 2.
        in_channels: input channels. Default 1.
        out_channels: output channels; ``None`` means ``in_channels``. Default None.
        latent_channels: channels of the Gaussian latent. Default 4.
        channels: channels per level; the input is downsampled by 2 between levels, so the latent
            is ``2 ** (len(channels) - 1)`` times smaller per axis. Default (64, 128, 256).
        num_res_blocks: residual blocks per level (encoder and decoder). Default 2.
        norm_num_groups: GroupNorm groups; must divide every entry of ``channels``. Default 32.
        norm_eps: GroupNorm epsilon. Default 1e-6.
        attention_levels: self-attention after each residual block of a level, one bool per level.
            ``None`` means no attention. Default None.
        with_encoder_nonlocal_attn: residual-attention-residual bottleneck at the end of the
            encoder. Default True.
        with_decoder_nonlocal_attn: the same at the start of the decoder. Default True.
        recon_loss: ``"l1"``, ``"l2"`` (= ``"mse"``) or ``"mse"``. Default ``"l1"``.
        kl_weight: weight of the KL term in ``loss``. Default 1e-6.

    Attributes:
        validate_inputs: check inputs and latents for NaN/Inf (one host sync each); set False for
            speed. Shape/dtype/size checks always run. Default True.
        config: the constructor arguments (saved by ``save_pretrained``).

    Example:
        >>> model = KLVAE(n_dims=3, in_channels=1, channels=(8, 16), norm_num_groups=8)
        >>> model.latent_shape((32, 32, 32))
        (16, 16, 16)
    """

    def __init__(
        self,
        n_dims: int = 2,
        in_channels: int = 1,
        out_channels: int | None = None,
        latent_channels: int = 4,
        channels: Sequence[int] = (64, 128, 256),
        num_res_blocks: int = 2,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-6,
        attention_levels: Sequence[bool] | None = None,
        with_encoder_nonlocal_attn: bool = True,
        with_decoder_nonlocal_attn: bool = True,
        recon_loss: str = "l1",
        kl_weight: float = 1e-6,
    ):
        super().__init__()
        nd.check_n_dims(n_dims)
        channels = [int(c) for c in channels]
        out_channels = in_channels if out_channels is None else out_channels
        attention_levels = [False] * len(channels) if attention_levels is None else [bool(a) for a in attention_levels]
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels),
                        ("latent_channels", latent_channels), ("norm_num_groups", norm_num_groups)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"channels must be a non-empty list of positive ints, got {channels}")
        if num_res_blocks < 0:
            raise ValueError(f"num_res_blocks must be >= 0, got {num_res_blocks}")
        for c in channels:
            if c % norm_num_groups:
                raise ValueError(
                    f"norm_num_groups ({norm_num_groups}) must divide every entry of channels; "
                    f"{c} is not divisible by {norm_num_groups}"
                )
        if len(attention_levels) != len(channels):
            raise ValueError(
                f"attention_levels needs one entry per entry of channels ({len(channels)}), got {len(attention_levels)}"
            )
        if recon_loss not in ("l1", "l2", "mse"):
            raise ValueError(f"recon_loss must be 'l1', 'l2' or 'mse', got {recon_loss!r}")
        if not kl_weight >= 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight}")
        self.config = {
            "n_dims": n_dims, "in_channels": in_channels, "out_channels": out_channels,
            "latent_channels": latent_channels, "channels": channels, "num_res_blocks": num_res_blocks,
            "norm_num_groups": norm_num_groups, "norm_eps": norm_eps, "attention_levels": attention_levels,
            "with_encoder_nonlocal_attn": with_encoder_nonlocal_attn,
            "with_decoder_nonlocal_attn": with_decoder_nonlocal_attn,
            "recon_loss": recon_loss, "kl_weight": kl_weight,
        }
        self.n_dims, self.in_channels, self.out_channels = n_dims, in_channels, out_channels
        self.latent_channels, self.recon_loss_kind, self.kl_weight = latent_channels, recon_loss, kl_weight
        self.downsample_factor = 2 ** (len(channels) - 1)
        self.validate_inputs = True
        g, eps, last = norm_num_groups, norm_eps, len(channels) - 1

        enc: list[nn.Module] = [nd.conv(n_dims, in_channels, channels[0], 3, padding=1)]
        c_prev = channels[0]
        for i, c in enumerate(channels):
            enc += _level(n_dims, c_prev, c, num_res_blocks, attention_levels[i], g, eps)
            if i != last:
                enc.append(_Downsample(n_dims, c))
            c_prev = c
        if with_encoder_nonlocal_attn:
            enc += _bottleneck(n_dims, channels[-1], g, eps)
        enc += [_norm(channels[-1], g, eps), nn.SiLU(), nd.conv(n_dims, channels[-1], latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        self.to_mean = nd.conv(n_dims, latent_channels, latent_channels, 1)
        self.to_logvar = nd.conv(n_dims, latent_channels, latent_channels, 1)
        self.post_latent = nd.conv(n_dims, latent_channels, latent_channels, 1)

        dec: list[nn.Module] = [nd.conv(n_dims, latent_channels, channels[-1], 3, padding=1)]
        if with_decoder_nonlocal_attn:
            dec += _bottleneck(n_dims, channels[-1], g, eps)
        c_prev = channels[-1]
        for i in reversed(range(len(channels))):
            dec += _level(n_dims, c_prev, channels[i], num_res_blocks, attention_levels[i], g, eps)
            if i != 0:
                dec.append(_Upsample(n_dims, channels[i]))
            c_prev = channels[i]
        dec += [_norm(channels[0], g, eps), nn.SiLU(), nd.conv(n_dims, channels[0], out_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    # ------------------------------------------------------------------ shapes and checks
    def latent_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Spatial shape of the latent for an input of spatial shape ``input_shape`` (``n_dims``
        ints; a leading channel entry ``[C, *S]`` is accepted too). The latent tensor is
        ``[B, latent_channels, *latent_shape]``."""
        shape = tuple(int(s) for s in input_shape)
        if len(shape) == self.n_dims + 1:
            shape = shape[1:]
        if len(shape) != self.n_dims:
            raise ValueError(f"input_shape needs {self.n_dims} spatial sizes, got {list(shape)}")
        self._check_divisible(shape)
        return tuple(s // self.downsample_factor for s in shape)

    def _check_divisible(self, spatial: Sequence[int]) -> None:
        f = self.downsample_factor
        bad = [s for s in spatial if s % f or s < f]
        if bad:
            raise ValueError(
                f"every spatial size must be a positive multiple of 2**(len(channels)-1) = {f} "
                f"({len(self.config['channels'])} levels), got spatial shape {list(spatial)}"
            )

    def _check_tensor(self, x: torch.Tensor, channels: int, what: str) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != self.n_dims + 2:
            raise ValueError(
                f"{what} must have shape [B, C, {', '.join(f'S{i}' for i in range(self.n_dims))}] "
                f"({self.n_dims + 2} dims for n_dims={self.n_dims}), got {x.ndim} dims: {list(x.shape)}"
            )
        if x.shape[1] != channels:
            raise ValueError(f"{what}: expected {channels} channels, got {x.shape[1]} (shape {list(x.shape)})")
        if not x.is_floating_point():
            raise TypeError(f"{what} must be a floating-point tensor, got dtype {x.dtype}")
        if self.validate_inputs and not torch.compiler.is_compiling():
            # one reduction + one host sync; the element-wise check only runs when the sum is not finite
            if not torch.isfinite(x.sum(dtype=torch.float32)) and not torch.isfinite(x).all():
                raise ValueError(f"{what} contains NaN or Inf values (shape {list(x.shape)}); "
                                 "clean the data or check the normalisation")

    # ------------------------------------------------------------------ public API
    def encode(self, x: torch.Tensor) -> GaussianLatent:
        """Posterior ``q(z | x)``: ``x [B, in_channels, *S] -> GaussianLatent(mean, std)``, each
        ``[B, latent_channels, *S / 2**(len(channels)-1)]``."""
        self._check_tensor(x, self.in_channels, "input")
        self._check_divisible(x.shape[2:])
        h = self.encoder(x)
        logvar = self.to_logvar(h).clamp(*_LOGVAR_RANGE)
        return GaussianLatent(mean=self.to_mean(h), std=torch.exp(0.5 * logvar))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent ``z [B, latent_channels, *L] -> [B, out_channels, *L * 2**(len(channels)-1)]``."""
        self._check_tensor(z, self.latent_channels, "latent")
        return self.decoder(self.post_latent(z))

    def forward(self, x: torch.Tensor) -> KLVAEOutput:
        """Encode, sample (training) or take the mean (eval), decode, and compute the losses.

        In eval mode ``forward(x).reconstruction == decode(encode(x).mean)``.
        """
        if self.out_channels != self.in_channels:
            raise ValueError(
                f"forward() computes a reconstruction loss and needs out_channels == in_channels "
                f"({self.out_channels} != {self.in_channels}); use encode/decode and your own loss"
            )
        posterior = self.encode(x)
        z = posterior.sample() if self.training else posterior.mean
        recon = self.decoder(self.post_latent(z))  # [B, out_channels, *S]
        rec = reconstruction_loss(recon, x, self.recon_loss_kind)
        kl = kl_divergence(posterior.mean, posterior.std)
        return KLVAEOutput(
            reconstruction=recon, loss=rec + self.kl_weight * kl, recon_loss=rec, kl_loss=kl,
            mean=posterior.mean, std=posterior.std,
        )
