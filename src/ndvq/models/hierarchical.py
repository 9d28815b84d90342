"""Two-level VQ-VAE-2 (Razavi et al. 2019) for 1D, 2D and 3D data, composed of two VideoGPT backbones
and two quantizer bottlenecks: ``HierarchicalAutoencoder`` and the preset ``HierarchicalVQVAE``.

Data flow (``ds`` = bottom ``downsample``, ``tds`` = ``top["downsample"]``)::

    x [B, C, *S] --backbone.features--> h_b [B, n_hiddens, *S/ds]
    h_b --top_backbone.encode--> [B, D_t, *L_t] --top_bottleneck--> q_t
    q_t --top_backbone.decode--> c [B, D, *S/ds]           (the top code conditions the bottom one)
    [h_b, c] --backbone.to_latent--> [B, D, *L] --bottleneck--> q_b
    [upsample_top(q_t), q_b] --backbone.decode--> x_hat [B, C_out, *S]

Both levels use the same quantizer kind and options; the top level can have its own size and width.

Example:
    >>> import torch
    >>> from ndvq import HierarchicalVQVAE
    >>> model = HierarchicalVQVAE(n_dims=2, in_channels=3, n_hiddens=32, downsample=(2, 2), top_downsample=(2, 2),
    ...                           embedding_dim=16, n_codes=64).eval()
    >>> top, bottom = model.encode(torch.randn(2, 3, 32, 32))
    >>> top.shape, bottom.shape, model.code_shapes((32, 32))
    (torch.Size([2, 8, 8]), torch.Size([2, 16, 16]), [(8, 8), (16, 16)])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ndvq import nd
from ndvq.errors import CodesError, ConfigError
from ndvq.models.autoencoder import (
    DEFAULT_EMBEDDING_DIM,
    backbone_options,
    check_options_dict,
    positive_int,
)
from ndvq.models.backbones import VideoGPTBackbone
from ndvq.models.backbones.blocks import SamePadConvTranspose, check_downsample, downsample_steps
from ndvq.models.bottleneck import QuantizerBottleneck
from ndvq.models.checks import InputChecks
from ndvq.models.outputs import HierarchicalAutoencoderOutput, HierarchicalCodes
from ndvq.models.presets import add_vq_loss, require_same_channels, vq_flat_config, vq_preset_args
from ndvq.models.pretrained import PretrainedMixin, accept_legacy_keys, to_jsonable
from ndvq.quantizers import QUANTIZER_KINDS

__all__ = ["HierarchicalAutoencoder", "HierarchicalVQVAE", "TOP_OPTIONS"]

#: keys of the ``top`` dict (None = the bottom level's value; downsample None = 2 on every axis)
TOP_OPTIONS = ("downsample", "n_codes", "embedding_dim")
# state-dict prefixes of the pre-``models`` HierarchicalVQVAE -> today's
_LEGACY_KEYS = {"encoder_bottom.": "backbone.encoder.", "encoder_top.": "top_backbone.encoder.",
                "pre_vq_top.": "top_backbone.pre_conv.", "quantizer_top.": "top_bottleneck.quantizer.",
                "decoder_top.0.": "top_backbone.post_conv.", "decoder_top.1.": "top_backbone.decoder.",
                "pre_vq_bottom.": "backbone.pre_conv.", "quantizer_bottom.": "bottleneck.quantizer.",
                "post_vq_conv.": "backbone.post_conv.", "decoder.": "backbone.decoder."}


class _Upsample(nn.Module):
    """Transposed-conv stack ``[B, c_in, *L] -> [B, c_out, *L * factors]`` (a 1x1 conv if no upsampling)."""

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


def _top_options(top: dict | None, n_dims: int, n_codes: int, embedding_dim: int) -> tuple:
    """``top`` dict -> ``(downsample tuple, n_codes, embedding_dim)`` with the defaults filled in."""
    top = check_options_dict("top", top)
    unknown = sorted(set(top) - set(TOP_OPTIONS))
    if unknown:
        raise TypeError(f"top got unknown options {unknown}; expected a subset of {list(TOP_OPTIONS)}")
    tds = check_downsample(2 if top.get("downsample") is None else top["downsample"], n_dims, "top_downsample")
    t_codes = positive_int("top n_codes", n_codes if top.get("n_codes") is None else top["n_codes"], 2)
    t_dim = positive_int("top embedding_dim", embedding_dim if top.get("embedding_dim") is None
                         else top["embedding_dim"])
    return tds, t_codes, t_dim


class HierarchicalAutoencoder(InputChecks, PretrainedMixin, nn.Module):
    """VQ-VAE-2: two code levels, the top one conditioning the bottom one.

    Args:
        n_dims, in_channels, out_channels, embedding_dim, n_codes, videogpt, quantizer: as in
            :class:`~ndvq.models.Autoencoder` (``videogpt["downsample"]`` is the bottom level's).
        backbone: only ``"videogpt"``. Default ``"videogpt"``.
        bottleneck: a quantizer kind (both levels). Default ``"vq"``.
        ldm: accepted for a uniform signature; unused. Default None.
        top: ``{"downsample": per-axis factor from bottom to top codes (None = 2 on every axis),
            "n_codes": top codebook size (None = n_codes), "embedding_dim": top code width
            (None = embedding_dim)}``. Default None.

    ``downsample`` and ``latent_shape`` describe the bottom grid; inputs must divide by
    ``downsample * top downsample`` (``input_multiple``). ``encode`` returns :class:`HierarchicalCodes`.
    """

    def __init__(self, n_dims: int = 2, in_channels: int = 3, out_channels: int | None = None,
                 backbone: str = "videogpt", bottleneck: str = "vq", embedding_dim: int | None = None,
                 n_codes: int = 512, videogpt: dict | None = None, ldm: dict | None = None,
                 quantizer: dict | None = None, top: dict | None = None) -> None:
        super().__init__()
        self.config = to_jsonable(dict(
            n_dims=n_dims, in_channels=in_channels, out_channels=out_channels, backbone=backbone,
            bottleneck=bottleneck, embedding_dim=embedding_dim, n_codes=n_codes, videogpt=videogpt, ldm=ldm,
            quantizer=quantizer, top=top))
        if backbone != "videogpt" or bottleneck not in QUANTIZER_KINDS:
            raise ConfigError(f"a hierarchical model needs backbone 'videogpt' and a quantizer bottleneck "
                              f"{QUANTIZER_KINDS}, got backbone {backbone!r}, bottleneck {bottleneck!r}")
        nd.check_n_dims(n_dims)
        out_channels = in_channels if out_channels is None else out_channels
        for name, v, lo in (("in_channels", in_channels, 1), ("out_channels", out_channels, 1),
                            ("n_codes", n_codes, 2)):
            positive_int(name, v, lo)
        d = positive_int("embedding_dim", DEFAULT_EMBEDDING_DIM["quantizer"] if embedding_dim is None
                         else embedding_dim)
        tds, t_codes, dt = _top_options(top, n_dims, n_codes, d)
        options = backbone_options("videogpt", videogpt)
        q = check_options_dict("quantizer", quantizer)
        self.n_dims, self.in_channels, self.out_channels, self.embedding_dim = n_dims, in_channels, out_channels, d
        self.validate_inputs = True
        self.backbone = VideoGPTBackbone(n_dims, in_channels, out_channels, d, condition_channels=d, **options)
        hidden = self.backbone.n_hiddens
        self.top_backbone = VideoGPTBackbone(n_dims, hidden, d, dt, **{**options, "downsample": tds})
        self.top_bottleneck = QuantizerBottleneck(bottleneck, dt, t_codes, **q)
        self.bottleneck = QuantizerBottleneck(bottleneck, d, n_codes, **q)
        self.upsample_top = _Upsample(n_dims, dt, d, tds)

    # ------------------------------------------------------------------ facts
    @property
    def downsample(self) -> tuple[int, ...]:
        """Downsampling from the input to the bottom code grid, per axis."""
        return self.backbone.downsample

    @property
    def top_downsample(self) -> tuple[int, ...]:
        """Further downsampling from the bottom to the top code grid, per axis."""
        return self.top_backbone.downsample

    @property
    def input_multiple(self) -> tuple[int, ...]:
        """Inputs must divide by both levels: ``downsample * top_downsample``."""
        return tuple(a * b for a, b in zip(self.downsample, self.top_downsample))

    downsample_rule = "its factor"

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """Codes per index column: the top level's columns, then the bottom level's."""
        return self.top_bottleneck.codebook_sizes + self.bottleneck.codebook_sizes

    def code_shapes(self, input_shape) -> list[tuple[int, ...]]:
        """Per-item shapes of the ``[top, bottom]`` code grids (with a trailing ``G`` for multi-codebook kinds)."""
        bottom = self.latent_shape(input_shape)
        top = tuple(b // f for b, f in zip(bottom, self.top_downsample))
        return [top + self.top_bottleneck.index_suffix, bottom + self.bottleneck.index_suffix]

    def codebook_parameters(self) -> list[nn.Parameter]:
        """Parameters that get ``quantizer.codebook_lr`` (both levels; empty for EMA codebooks)."""
        return [*self.top_bottleneck.codebook_parameters(), *self.bottleneck.codebook_parameters()]

    # ------------------------------------------------------------------ internals
    def _quantize(self, x: torch.Tensor):
        h_b = self.backbone.features(x)  # [B, n_hiddens, *S/ds]
        q_t = self.top_bottleneck(self.top_backbone.encode(h_b))  # latent [B, D_t, *L_t]
        cond = self.top_backbone.decode(q_t.latent)  # [B, D, *L]
        q_b = self.bottleneck(self.backbone.to_latent(h_b, cond))  # [B, n_hiddens + D, *L] -> [B, D, *L]
        return q_t, q_b

    def _decode_latents(self, top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
        """Code vectors ``top [B, D_t, *L_t]``, ``bottom [B, D, *L]`` -> ``[B, C_out, *S]``."""
        return self.backbone.decode(bottom, cond=self.upsample_top(top))  # cat [B, 2D, *L]

    # ------------------------------------------------------------------ public API
    def encode(self, x: torch.Tensor) -> HierarchicalCodes:
        """``x [B, in_channels, *S]`` -> ``HierarchicalCodes(top [B, *L_t], bottom [B, *L])`` (a trailing ``G``
        axis for multi-codebook quantizers). Call ``model.eval()`` first."""
        self.check_input(x)
        q_t, q_b = self._quantize(x)
        return HierarchicalCodes(top=q_t.indices, bottom=q_b.indices)

    def decode(self, codes) -> torch.Tensor:
        """``(top, bottom)`` code indices (a :class:`HierarchicalCodes`, tuple or list) -> ``[B, out_channels, *S]``."""
        if not isinstance(codes, (tuple, list)) or len(codes) != 2:
            raise TypeError(f"decode expects the (top, bottom) codes returned by encode, got {type(codes).__name__}")
        top, bottom = codes
        self.check_indices(top, self.top_bottleneck.index_suffix, max(self.top_bottleneck.codebook_sizes),
                           "top codes")
        self.check_indices(bottom, self.bottleneck.index_suffix, max(self.bottleneck.codebook_sizes), "bottom codes")
        n = self.n_dims
        if top.shape[0] != bottom.shape[0] or any(
                b != t * f for b, t, f in zip(bottom.shape[1:1 + n], top.shape[1:1 + n], self.top_downsample)):
            raise CodesError(f"bottom codes {list(bottom.shape)} must be top codes {list(top.shape)} times "
                             f"top_downsample {list(self.top_downsample)} per spatial axis")
        return self._decode_latents(self.top_bottleneck.decode(top), self.bottleneck.decode(bottom))

    def forward(self, x: torch.Tensor) -> HierarchicalAutoencoderOutput:
        """Both levels' quantization and the reconstruction (quantizer losses of both levels added)."""
        self.check_input(x)
        q_t, q_b = self._quantize(x)
        losses = {**{f"top_{k}": v for k, v in q_t.losses.items()}, **{f"bottom_{k}": v for k, v in q_b.losses.items()}}
        return HierarchicalAutoencoderOutput(
            reconstruction=self._decode_latents(q_t.latent, q_b.latent), aux_loss=q_t.aux_loss + q_b.aux_loss,
            commitment_loss=q_t.commitment_loss + q_b.commitment_loss,
            perplexity=(q_t.perplexity + q_b.perplexity) / 2, usage=(q_t.usage + q_b.usage) / 2,
            indices=HierarchicalCodes(top=q_t.indices, bottom=q_b.indices), counts=[q_t.counts, q_b.counts],
            losses=losses, top_perplexity=q_t.perplexity, bottom_perplexity=q_b.perplexity,
            top_usage=q_t.usage, bottom_usage=q_b.usage)


class HierarchicalVQVAE(HierarchicalAutoencoder):
    """Two-level VQ-VAE-2 with top and bottom codes (flat arguments).

    Args:
        n_dims, in_channels, out_channels, n_hiddens, n_res_layers, downsample, embedding_dim, n_codes,
        codebook_beta, recon_loss_factor, recon_loss, n_head, attn_type, attn_dropout, dropout, norm,
        num_groups, ema_decay, quantizer: as in :class:`ndvq.VQVAE` (``downsample`` is the bottom level's).
            Defaults as there.
        top_downsample: further per-axis downsampling from bottom to top codes, powers of two. Default 2 (every axis).
        top_n_codes: codes of the top codebook; None means ``n_codes``. Default None.
        top_embedding_dim: width of the top codes; None means ``embedding_dim``. Default None.

    ``encode(x)`` returns :class:`~ndvq.models.outputs.HierarchicalCodes` ``(top, bottom)``;
    ``decode`` takes that (or any ``(top, bottom)`` pair). ``forward(x).loss`` is
    ``recon_loss_factor * recon_loss + aux_loss`` (Python API only).
    """

    def __init__(self, n_dims: int = 2, in_channels: int = 3, out_channels: int | None = None, n_hiddens: int = 128,
                 n_res_layers: int = 2, downsample: int | Sequence[int] = 4, embedding_dim: int = 64,
                 n_codes: int = 512, codebook_beta: float | None = None, recon_loss_factor: float = 1.0,
                 recon_loss: str = "mse", n_head: int = 2, attn_type: str = "axial", attn_dropout: float = 0.0,
                 dropout: float = 0.0, norm: str = "channel", num_groups: int = 32, ema_decay: float = 0.99,
                 quantizer: dict | None = None, top_downsample: int | Sequence[int] = 2,
                 top_n_codes: int | None = None, top_embedding_dim: int | None = None) -> None:
        cfg = vq_flat_config(locals())
        cfg.update(top_downsample=list(check_downsample(top_downsample, n_dims, "top_downsample")),
                   top_n_codes=n_codes if top_n_codes is None else top_n_codes,
                   top_embedding_dim=embedding_dim if top_embedding_dim is None else top_embedding_dim)
        top = {"downsample": cfg["top_downsample"], "n_codes": cfg["top_n_codes"],
               "embedding_dim": cfg["top_embedding_dim"]}
        super().__init__(**vq_preset_args(cfg), top=top)
        self.config = cfg
        self.recon_loss_kind, self.recon_loss_factor = recon_loss, recon_loss_factor
        accept_legacy_keys(self, _LEGACY_KEYS)

    def forward(self, x: torch.Tensor) -> HierarchicalAutoencoderOutput:
        """The hierarchical output plus ``recon_loss`` and ``loss``."""
        require_same_channels(self)
        return add_vq_loss(super().forward(x), x, self.recon_loss_kind, self.recon_loss_factor)
