"""``VQVAE``: one N-dimensional VQ-VAE for 1D (audio, series), 2D (images, slices) and 3D (video, volumes).

``x [B, C, *S]`` -> encoder -> 1x1 conv to ``embedding_dim`` -> channels last ``[B, *L, D]`` ->
quantizer (any of ``ndvq.quantizers``) -> channels first -> 1x1 conv -> decoder -> ``[B, C_out, *S]``.

Example:
    >>> import torch
    >>> from ndvq import VQVAE
    >>> model = VQVAE(n_dims=3, in_channels=1, n_hiddens=32, downsample=(1, 4, 4), embedding_dim=16, n_codes=64)
    >>> x = torch.randn(2, 1, 4, 32, 32)                 # [B, C, T, H, W]
    >>> out = model(x)
    >>> out.reconstruction.shape, out.indices.shape
    (torch.Size([2, 1, 4, 32, 32]), torch.Size([2, 4, 8, 8]))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ndvq import nd
from ndvq.networks.blocks import Decoder, Encoder, check_downsample
from ndvq.networks.outputs import VQVAEOutput
from ndvq.networks.pretrained import PretrainedMixin

__all__ = ["VQVAE", "RECON_LOSSES", "build_model_quantizer", "InputChecks"]

RECON_LOSSES = ("mse", "l1", "l2")


def recon_error(recon: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean squared (``"mse"``/``"l2"``) or absolute (``"l1"``) error."""
    return F.l1_loss(recon, x) if kind == "l1" else F.mse_loss(recon, x)


def build_model_quantizer(quantizer: dict | None, dim: int, n_codes: int, beta: float, ema_decay: float) -> nn.Module:
    """``build_quantizer(kind, dim, n_codes, beta, ema_decay, **options)`` from a ``QuantizerConfig``-style dict."""
    from ndvq.quantizers import build_quantizer

    check_quantizer_arg(quantizer)
    options = dict(quantizer or {})
    kind = options.pop("kind", "vq")
    return build_quantizer(kind, dim, n_codes, beta, ema_decay, **options)


def check_quantizer_arg(quantizer) -> None:
    """``quantizer`` must be None or a dict of ``QuantizerConfig`` fields."""
    if quantizer is not None and not isinstance(quantizer, dict):
        raise TypeError(f"quantizer must be a dict of QuantizerConfig fields (kind + options) or None, "
                        f"got {type(quantizer).__name__}: {quantizer!r}")


def _positive_int(name: str, v: Any, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {v!r}")
    return v


class InputChecks:
    """Input validation shared by the VQ models (needs ``n_dims``, ``in_channels``, ``downsample_total``
    and ``validate_inputs`` on ``self``)."""

    n_dims: int
    in_channels: int
    downsample_total: tuple[int, ...]
    validate_inputs: bool

    def latent_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Latent spatial shape for an input spatial shape ``S`` (``n_dims`` ints; ``[C, *S]`` and
        ``[B, C, *S]`` are accepted too). Raises ``ValueError`` when ``S`` is not divisible by the
        downsampling.

        Example:
            >>> VQVAE(n_dims=2, downsample=(4, 2)).latent_shape((32, 32))
            (8, 16)
        """
        shape = tuple(int(s) for s in input_shape)
        if len(shape) in (self.n_dims + 1, self.n_dims + 2):
            shape = shape[len(shape) - self.n_dims:]
        if len(shape) != self.n_dims:
            raise ValueError(f"input_shape needs {self.n_dims} spatial sizes (or [C, *S]), got {list(input_shape)}")
        self._check_divisible(shape)
        return tuple(s // f for s, f in zip(shape, self.downsample_total))

    def _check_divisible(self, spatial: Sequence[int]) -> None:
        f = self.downsample_total
        if any(s % d or s < d for s, d in zip(spatial, f)):
            raise ValueError(f"spatial size {list(spatial)} is not divisible by the total downsampling {list(f)} "
                             f"(each axis must be a positive multiple of its factor); crop or pad the input")

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != self.n_dims + 2:
            axes = ", ".join(f"S{i}" for i in range(self.n_dims))
            raise ValueError(f"expected input [B, C, {axes}] ({self.n_dims + 2} dims for n_dims={self.n_dims}), "
                             f"got {x.ndim} dims with shape {list(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} channels (dim 1), got {x.shape[1]} (shape {list(x.shape)})")
        if not x.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor, got dtype {x.dtype}; convert with x.float()")
        self._check_divisible(x.shape[2:])
        if self.validate_inputs and not torch.compiler.is_compiling():
            # one reduction + one host sync; the element-wise check only runs when the sum is not finite
            if not torch.isfinite(x.sum(dtype=torch.float32)) and not torch.isfinite(x).all():
                raise ValueError(f"input contains NaN or Inf values (shape {list(x.shape)}); "
                                 "clean the data or check the normalisation")

    def _check_indices(self, indices: torch.Tensor, quantizer: nn.Module, latent_ndim: int, what: str) -> None:
        if not isinstance(indices, torch.Tensor):
            raise TypeError(f"{what} must be a torch.Tensor, got {type(indices).__name__}")
        if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
            raise TypeError(f"{what} must be an integer tensor, got dtype {indices.dtype}")
        suffix = tuple(quantizer.index_suffix)
        want = 1 + latent_ndim + len(suffix)
        if indices.ndim != want or (suffix and tuple(indices.shape[-len(suffix):]) != suffix):
            extra = f", {suffix[0]}" if suffix else ""
            raise ValueError(f"{what} must have shape [B, *latent({latent_ndim} axes){extra}], got {list(indices.shape)}")
        if self.validate_inputs and not torch.compiler.is_compiling() and indices.numel():
            lo, hi = int(indices.min()), int(indices.max())
            if lo < 0 or hi >= quantizer.n_codes:
                raise ValueError(f"{what} must lie in [0, {quantizer.n_codes - 1}], got values in [{lo}, {hi}]")


class VQVAE(InputChecks, PretrainedMixin, nn.Module):
    """N-dimensional VQ-VAE.

    Args:
        n_dims: spatial axes: 1 (audio, series), 2 (images), 3 (video, volumes). Default 2.
        in_channels: input channels (1 gray/mono, 3 RGB, any number of sensor channels). Default 3.
        out_channels: output channels; None means ``in_channels``. Default None.
        n_hiddens: hidden channels of encoder and decoder. Default 128.
        n_res_layers: attention residual blocks in encoder and decoder. Default 2.
        downsample: per-axis downsampling, powers of two; an int or one entry applies to every
            axis, e.g. ``(1, 4, 4)`` keeps time and shrinks space, ``(4,)`` for audio. Default 4 (every axis).
        embedding_dim: code vector width ``D``. Default 64.
        n_codes: codebook size ``K``. Default 512.
        codebook_beta: commitment weight. Default 0.25.
        recon_loss_factor: weight of the reconstruction loss in ``loss``. Default 1.0.
        recon_loss: ``"mse"`` or ``"l1"``. Default ``"mse"``.
        n_head: attention heads in the residual blocks; 0 turns attention off. Default 2.
        attn_type: ``"axial"`` (one attention per spatial axis, VideoGPT) or ``"full"``. Default ``"axial"``.
        attn_dropout: attention dropout. Default 0.0.
        dropout: dropout inside residual blocks. Default 0.0.
        norm: ``"batch"`` or ``"group"``. Default ``"batch"``.
        num_groups: group-norm groups (largest divisor of the channels <= this). Default 32.
        ema_decay: EMA decay of the codebook statistics. Default 0.99.
        quantizer: ``QuantizerConfig`` fields as a dict, e.g. ``{"kind": "fsq", "levels": [8, 5, 5, 5]}``
            or ``{"restart": "replay"}``; None is the default EMA vector quantizer. Default None.

    Attributes:
        validate_inputs: check inputs for NaN/Inf (and decode indices for range). Each check costs a
            host sync; the training loop may set it to False for speed. Shape/dtype checks always run.
        config: the constructor arguments (saved by :meth:`save_pretrained`).

    Example:
        >>> model = VQVAE(n_dims=1, in_channels=2, n_hiddens=32, downsample=[4], embedding_dim=16, n_codes=64)
        >>> x = torch.randn(4, 2, 1024)
        >>> codes = model.eval().encode(x)                   # [4, 256]
        >>> torch.allclose(model.decode(codes), model(x).reconstruction, atol=1e-5)
        True
    """

    def __init__(self, n_dims: int = 2, in_channels: int = 3, out_channels: int | None = None, n_hiddens: int = 128,
                 n_res_layers: int = 2, downsample: int | Sequence[int] = 4, embedding_dim: int = 64,
                 n_codes: int = 512, codebook_beta: float = 0.25, recon_loss_factor: float = 1.0,
                 recon_loss: str = "mse", n_head: int = 2, attn_type: str = "axial", attn_dropout: float = 0.0,
                 dropout: float = 0.0, norm: str = "batch", num_groups: int = 32, ema_decay: float = 0.99,
                 quantizer: dict | None = None) -> None:
        super().__init__()
        nd.check_n_dims(n_dims)
        out_channels = in_channels if out_channels is None else out_channels
        _positive_int("in_channels", in_channels)
        _positive_int("out_channels", out_channels)
        _positive_int("embedding_dim", embedding_dim)
        _positive_int("n_codes", n_codes, 2)
        _positive_int("num_groups", num_groups)
        ds = check_downsample(downsample, n_dims)
        check_quantizer_arg(quantizer)
        if recon_loss not in RECON_LOSSES:
            raise ValueError(f"recon_loss must be one of {RECON_LOSSES}, got {recon_loss!r}")
        if not recon_loss_factor > 0 or not codebook_beta >= 0:
            raise ValueError(f"need recon_loss_factor > 0 and codebook_beta >= 0, got {recon_loss_factor}, {codebook_beta}")
        self.config = dict(n_dims=n_dims, in_channels=in_channels, out_channels=out_channels, n_hiddens=n_hiddens,
                           n_res_layers=n_res_layers, downsample=list(ds), embedding_dim=embedding_dim, n_codes=n_codes,
                           codebook_beta=codebook_beta, recon_loss_factor=recon_loss_factor, recon_loss=recon_loss,
                           n_head=n_head, attn_type=attn_type, attn_dropout=attn_dropout, dropout=dropout, norm=norm,
                           num_groups=num_groups, ema_decay=ema_decay,
                           quantizer=dict(quantizer) if quantizer is not None else None)
        self.n_dims, self.in_channels, self.out_channels = n_dims, in_channels, out_channels
        self.downsample = self.downsample_total = ds
        self.embedding_dim, self.recon_loss_kind, self.recon_loss_factor = embedding_dim, recon_loss, recon_loss_factor
        self.validate_inputs = True
        blocks = dict(norm=norm, num_groups=num_groups, dropout=dropout, n_head=n_head, attn_type=attn_type,
                      attn_dropout=attn_dropout)
        self.encoder = Encoder(n_dims, in_channels, n_hiddens, n_res_layers, ds, **blocks)
        self.pre_vq_conv = nd.conv(n_dims, n_hiddens, embedding_dim, 1)
        self.quantizer = build_model_quantizer(quantizer, embedding_dim, n_codes, codebook_beta, ema_decay)
        self.post_vq_conv = nd.conv(n_dims, embedding_dim, n_hiddens, 1)
        self.decoder = Decoder(n_dims, out_channels, n_hiddens, n_res_layers, ds, **blocks)

    @property
    def n_codes(self) -> int:
        """Codes per codebook of the quantizer."""
        return self.quantizer.n_codes

    def codebook_parameters(self) -> list[nn.Parameter]:
        """Parameters that get ``quantizer.codebook_lr`` (empty for EMA codebooks)."""
        return list(self.quantizer.codebook_parameters())

    # ------------------------------------------------------------------ encode / decode
    def _quantize(self, x: torch.Tensor):
        z = self.pre_vq_conv(self.encoder(x))  # [B, D, *L]
        return self.quantizer(nd.channels_last(z))  # tokens [B, *L, D]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, in_channels, *S]`` -> code indices ``[B, *L]`` (``[B, *L, G]`` for multi-codebook
        quantizers), ``torch.long``. Call ``model.eval()`` first: in training mode the quantizer
        updates its codebook."""
        self._check_input(x)
        return self._quantize(x).indices

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices ``[B, *L]`` (or ``[B, *L, G]``) -> reconstruction ``[B, out_channels, *S]``."""
        self._check_indices(indices, self.quantizer, self.n_dims, "indices")
        q = self.quantizer.lookup(indices.long())  # [B, *L, D]
        return self.decoder(self.post_vq_conv(nd.channels_first(q)))

    def forward(self, x: torch.Tensor) -> VQVAEOutput:
        """Encode, quantize, decode and compute the losses; see :class:`~ndvq.networks.outputs.VQVAEOutput`."""
        self._check_input(x)
        if self.out_channels != self.in_channels:
            raise ValueError(f"forward() needs out_channels == in_channels for its reconstruction loss "
                             f"({self.out_channels} != {self.in_channels}); use encode/decode with your own loss")
        q = self._quantize(x)
        recon = self.decoder(self.post_vq_conv(nd.channels_first(q.quantized)))  # [B, C, *S]
        rec = recon_error(recon, x, self.recon_loss_kind)
        return VQVAEOutput(reconstruction=recon, loss=self.recon_loss_factor * rec + q.loss, recon_loss=rec,
                           commitment_loss=q.commitment_loss, perplexity=q.perplexity, usage=q.usage,
                           indices=q.indices, counts=q.counts, losses=dict(q.losses))
