"""``HierarchicalVQVAE``: the two-level VQ-VAE-2 (Razavi et al. 2019) for 1D, 2D and 3D data.

Data flow (``ds`` = ``downsample``, ``tds`` = ``top_downsample``)::

    x [B, C, *S] --bottom encoder--> h_b [B, n_hiddens, *S/ds]
    h_b --top encoder--> h_t [B, n_hiddens, *S/(ds*tds)] --1x1--> top quantizer --> q_t [B, D_t, *L_t]
    q_t --top decoder--> c [B, D, *S/ds]                 (the top code conditions the bottom one)
    [h_b, c] --1x1--> bottom quantizer --> q_b [B, D, *L]
    [upsample(q_t), q_b] --1x1--> decoder --> x_hat [B, C_out, *S]

Both levels use the same quantizer kind and options (``quantizer``); the top level can have its
own size (``top_n_codes``) and width (``top_embedding_dim``).

Example:
    >>> import torch
    >>> from ndvq import HierarchicalVQVAE
    >>> model = HierarchicalVQVAE(n_dims=2, in_channels=3, n_hiddens=32, downsample=(2, 2), top_downsample=(2, 2),
    ...                           embedding_dim=16, n_codes=64).eval()
    >>> top, bottom = model.encode(torch.randn(2, 3, 32, 32))
    >>> top.shape, bottom.shape
    (torch.Size([2, 8, 8]), torch.Size([2, 16, 16]))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ndvq import nd
from ndvq.networks.blocks import (
    Decoder,
    Encoder,
    SamePadConvTranspose,
    check_downsample,
    downsample_steps,
)
from ndvq.networks.outputs import HierarchicalCodes, HierarchicalVQVAEOutput
from ndvq.networks.pretrained import PretrainedMixin
from ndvq.networks.vqvae import (
    RECON_LOSSES,
    InputChecks,
    _positive_int,
    build_model_quantizer,
    check_quantizer_arg,
    recon_error,
)

__all__ = ["HierarchicalVQVAE"]


class _Upsample(nn.Module):
    """Transposed-conv stack ``[B, c_in, *L] -> [B, c_out, *L * factors]`` (identity-sized 1x1 conv if no upsampling)."""

    def __init__(self, n_dims: int, c_in: int, c_out: int, factors: Sequence[int]) -> None:
        super().__init__()
        steps = downsample_steps(factors)
        layers: list[nn.Module] = []
        for i, stride in enumerate(steps):
            layers.append(SamePadConvTranspose(n_dims, c_in if i == 0 else c_out, c_out, 4, stride=stride))
            if i < len(steps) - 1:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers) if layers else nd.conv(n_dims, c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class HierarchicalVQVAE(InputChecks, PretrainedMixin, nn.Module):
    """Two-level VQ-VAE-2 with top and bottom codes.

    Args:
        n_dims, in_channels, out_channels, n_hiddens, n_res_layers, downsample, embedding_dim, n_codes,
        codebook_beta, recon_loss_factor, recon_loss, n_head, attn_type, attn_dropout, dropout, norm,
        num_groups, ema_decay, quantizer: as in :class:`ndvq.VQVAE` (``downsample`` is the bottom level's).
            Defaults as there.
        top_downsample: further per-axis downsampling from bottom to top codes, powers of two. Default 2 (every axis).
        top_n_codes: codes of the top codebook; None means ``n_codes``. Default None.
        top_embedding_dim: width of the top codes; None means ``embedding_dim``. Default None.

    ``encode(x)`` returns :class:`~ndvq.networks.outputs.HierarchicalCodes` ``(top, bottom)``;
    ``decode`` takes that (or any ``(top, bottom)`` pair).
    """

    def __init__(self, n_dims: int = 2, in_channels: int = 3, out_channels: int | None = None, n_hiddens: int = 128,
                 n_res_layers: int = 2, downsample: int | Sequence[int] = 4, embedding_dim: int = 64,
                 n_codes: int = 512, codebook_beta: float = 0.25, recon_loss_factor: float = 1.0,
                 recon_loss: str = "mse", n_head: int = 2, attn_type: str = "axial", attn_dropout: float = 0.0,
                 dropout: float = 0.0, norm: str = "batch", num_groups: int = 32, ema_decay: float = 0.99,
                 quantizer: dict | None = None, top_downsample: int | Sequence[int] = 2,
                 top_n_codes: int | None = None, top_embedding_dim: int | None = None) -> None:
        super().__init__()
        nd.check_n_dims(n_dims)
        out_channels = in_channels if out_channels is None else out_channels
        top_n_codes = n_codes if top_n_codes is None else top_n_codes
        top_embedding_dim = embedding_dim if top_embedding_dim is None else top_embedding_dim
        for name, v, lo in (("in_channels", in_channels, 1), ("out_channels", out_channels, 1),
                            ("embedding_dim", embedding_dim, 1), ("top_embedding_dim", top_embedding_dim, 1),
                            ("n_codes", n_codes, 2), ("top_n_codes", top_n_codes, 2), ("num_groups", num_groups, 1)):
            _positive_int(name, v, lo)
        ds = check_downsample(downsample, n_dims)
        tds = check_downsample(top_downsample, n_dims, "top_downsample")
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
                           quantizer=dict(quantizer) if quantizer is not None else None,
                           top_downsample=list(tds), top_n_codes=top_n_codes, top_embedding_dim=top_embedding_dim)
        self.n_dims, self.in_channels, self.out_channels = n_dims, in_channels, out_channels
        self.downsample, self.top_downsample = ds, tds
        self.downsample_total = tuple(a * b for a, b in zip(ds, tds))  # inputs must divide by both levels
        self.recon_loss_kind, self.recon_loss_factor = recon_loss, recon_loss_factor
        self.validate_inputs = True
        blocks = dict(norm=norm, num_groups=num_groups, dropout=dropout, n_head=n_head, attn_type=attn_type,
                      attn_dropout=attn_dropout)
        d, dt = embedding_dim, top_embedding_dim
        self.encoder_bottom = Encoder(n_dims, in_channels, n_hiddens, n_res_layers, ds, **blocks)
        self.encoder_top = Encoder(n_dims, n_hiddens, n_hiddens, n_res_layers, tds, **blocks)
        self.pre_vq_top = nd.conv(n_dims, n_hiddens, dt, 1)
        self.quantizer_top = build_model_quantizer(quantizer, dt, top_n_codes, codebook_beta, ema_decay)
        self.decoder_top = nn.Sequential(nd.conv(n_dims, dt, n_hiddens, 1),
                                         Decoder(n_dims, d, n_hiddens, n_res_layers, tds, **blocks))
        self.pre_vq_bottom = nd.conv(n_dims, n_hiddens + d, d, 1)
        self.quantizer_bottom = build_model_quantizer(quantizer, d, n_codes, codebook_beta, ema_decay)
        self.upsample_top = _Upsample(n_dims, dt, d, tds)
        self.post_vq_conv = nd.conv(n_dims, 2 * d, n_hiddens, 1)
        self.decoder = Decoder(n_dims, out_channels, n_hiddens, n_res_layers, ds, **blocks)

    @property
    def n_codes(self) -> int:
        """Codes per codebook of the bottom quantizer."""
        return self.quantizer_bottom.n_codes

    def codebook_parameters(self) -> list[nn.Parameter]:
        """Parameters that get ``quantizer.codebook_lr`` (both levels; empty for EMA codebooks)."""
        return [*self.quantizer_top.codebook_parameters(), *self.quantizer_bottom.codebook_parameters()]

    # ------------------------------------------------------------------ internals
    def _quantize(self, x: torch.Tensor):
        h_b = self.encoder_bottom(x)  # [B, n_hiddens, *S/ds]
        z_t = self.pre_vq_top(self.encoder_top(h_b))  # [B, D_t, *L_t]
        q_t = self.quantizer_top(nd.channels_last(z_t))  # tokens [B, *L_t, D_t]
        cond = self.decoder_top(nd.channels_first(q_t.quantized))  # [B, D, *L]
        z_b = self.pre_vq_bottom(torch.cat([h_b, cond], dim=1))  # [B, n_hiddens + D, *L] -> [B, D, *L]
        q_b = self.quantizer_bottom(nd.channels_last(z_b))  # tokens [B, *L, D]
        return q_t, q_b

    def _decode_vectors(self, top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
        """Channels-last code vectors ``top [B, *L_t, D_t]``, ``bottom [B, *L, D]`` -> ``[B, C_out, *S]``."""
        up = self.upsample_top(nd.channels_first(top))  # [B, D, *L]
        return self.decoder(self.post_vq_conv(torch.cat([up, nd.channels_first(bottom)], dim=1)))

    # ------------------------------------------------------------------ public API
    def encode(self, x: torch.Tensor) -> HierarchicalCodes:
        """``x [B, in_channels, *S]`` -> ``HierarchicalCodes(top [B, *L_t], bottom [B, *L])`` (a trailing ``G``
        axis for multi-codebook quantizers). Call ``model.eval()`` first."""
        self._check_input(x)
        q_t, q_b = self._quantize(x)
        return HierarchicalCodes(top=q_t.indices, bottom=q_b.indices)

    def decode(self, codes) -> torch.Tensor:
        """``(top, bottom)`` code indices (a :class:`HierarchicalCodes`, tuple or list) -> ``[B, out_channels, *S]``."""
        if not isinstance(codes, (tuple, list)) or len(codes) != 2:
            raise TypeError(f"decode expects the (top, bottom) codes returned by encode, got {type(codes).__name__}")
        top, bottom = codes
        self._check_indices(top, self.quantizer_top, self.n_dims, "top codes")
        self._check_indices(bottom, self.quantizer_bottom, self.n_dims, "bottom codes")
        if top.shape[0] != bottom.shape[0] or any(
                b != t * f for b, t, f in zip(bottom.shape[1:1 + self.n_dims], top.shape[1:1 + self.n_dims],
                                              self.top_downsample)):
            raise ValueError(f"bottom codes {list(bottom.shape)} must be top codes {list(top.shape)} times "
                             f"top_downsample {list(self.top_downsample)} per spatial axis")
        return self._decode_vectors(self.quantizer_top.lookup(top.long()), self.quantizer_bottom.lookup(bottom.long()))

    def forward(self, x: torch.Tensor) -> HierarchicalVQVAEOutput:
        """Both levels' quantization, the reconstruction and the losses (quantizer losses of both levels added)."""
        self._check_input(x)
        if self.out_channels != self.in_channels:
            raise ValueError(f"forward() needs out_channels == in_channels for its reconstruction loss "
                             f"({self.out_channels} != {self.in_channels}); use encode/decode with your own loss")
        q_t, q_b = self._quantize(x)
        recon = self._decode_vectors(q_t.quantized, q_b.quantized)
        rec = recon_error(recon, x, self.recon_loss_kind)
        losses = {**{f"top_{k}": v for k, v in q_t.losses.items()}, **{f"bottom_{k}": v for k, v in q_b.losses.items()}}
        return HierarchicalVQVAEOutput(
            reconstruction=recon, loss=self.recon_loss_factor * rec + q_t.loss + q_b.loss, recon_loss=rec,
            commitment_loss=q_t.commitment_loss + q_b.commitment_loss,
            perplexity=(q_t.perplexity + q_b.perplexity) / 2, usage=(q_t.usage + q_b.usage) / 2,
            indices=HierarchicalCodes(top=q_t.indices, bottom=q_b.indices), counts=[q_t.counts, q_b.counts],
            losses=losses, top_perplexity=q_t.perplexity, bottom_perplexity=q_b.perplexity,
            top_usage=q_t.usage, bottom_usage=q_b.usage)
