"""Presets with their historical arguments: ``VQVAE`` (VideoGPT backbone x quantizer) and ``KLVAE``
(LDM backbone x Gaussian), both :class:`~ndvq.models.Autoencoder` subclasses.

Each takes flat keyword arguments (its ``config``, so ``save_pretrained`` folders and checkpoints of
earlier versions load, weights included) and translates them into the autoencoder's backbone and
bottleneck options. Their loss arguments only fill ``out.loss`` / ``out.recon_loss`` for direct
Python use; the training engine weighs the terms with ``ndvq.objectives.Objective`` instead.

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

import torch

from ndvq import nd
from ndvq.errors import ConfigError
from ndvq.models import monai
from ndvq.models.autoencoder import Autoencoder, check_options_dict
from ndvq.models.backbones.blocks import check_downsample
from ndvq.models.outputs import AutoencoderOutput
from ndvq.models.pretrained import accept_legacy_keys
from ndvq.objectives.reconstruction import RECON_LOSSES, reconstruction_loss
from ndvq.quantizers import QUANTIZER_KINDS

__all__ = ["VQVAE", "KLVAE", "vq_preset_args", "check_recon_args", "add_vq_loss", "require_same_channels"]

#: flat VQVAE argument -> VideoGPT backbone option
VQ_BACKBONE_ARGS = {"n_hiddens": "n_hiddens", "n_res_layers": "num_res_blocks", "downsample": "downsample",
                    "n_head": "n_head", "attn_type": "attn_type", "attn_dropout": "attn_dropout",
                    "dropout": "dropout", "norm": "norm", "num_groups": "norm_num_groups"}
#: flat KLVAE argument -> LDM backbone option
KL_BACKBONE_ARGS = ("channels", "num_res_blocks", "norm_num_groups", "norm_eps", "attention_levels",
                    "with_encoder_nonlocal_attn", "with_decoder_nonlocal_attn", "use_convtranspose", "include_fc",
                    "use_combined_linear", "use_flash_attention", "final_activation")
# state-dict prefixes of the pre-``models`` layout -> today's (old folders and checkpoints still load)
_VQ_LEGACY_KEYS = {"encoder.": "backbone.encoder.", "pre_vq_conv.": "backbone.pre_conv.",
                   "quantizer.": "bottleneck.quantizer.", "post_vq_conv.": "backbone.post_conv.",
                   "decoder.": "backbone.decoder."}
_KL_LEGACY_KEYS = {"encoder.": "backbone.encoder.", "to_mean.": "bottleneck.to_mean.",
                   "to_logvar.": "bottleneck.to_logvar.", "post_latent.": "backbone.post_conv.",
                   "decoder.": "backbone.decoder."}


#: The flat arguments of ``VQVAE`` (``HierarchicalVQVAE`` adds its ``top_*`` ones), in signature order.
VQ_FLAT_ARGS = ("n_dims", "in_channels", "out_channels", "n_hiddens", "n_res_layers", "downsample", "embedding_dim",
                "n_codes", "codebook_beta", "recon_loss_factor", "recon_loss", "n_head", "attn_type", "attn_dropout",
                "dropout", "norm", "num_groups", "ema_decay", "quantizer")


def vq_flat_config(args: dict) -> dict:
    """The checked, JSON-able config of a flat VQ preset from its constructor's ``locals()``
    (``out_channels`` filled in, ``downsample`` expanded to one entry per axis, ``quantizer`` copied)."""
    nd.check_n_dims(args["n_dims"])
    check_recon_args(args["recon_loss"], args["recon_loss_factor"], args["codebook_beta"])
    cfg = {k: args[k] for k in VQ_FLAT_ARGS}
    q = cfg["quantizer"]
    cfg.update(out_channels=cfg["in_channels"] if cfg["out_channels"] is None else cfg["out_channels"],
               downsample=list(check_downsample(cfg["downsample"], cfg["n_dims"])),
               quantizer=dict(q) if isinstance(q, dict) else q)
    return cfg


def vq_preset_args(cfg: dict) -> dict:
    """Flat VQ arguments (a ``VQVAE``/``HierarchicalVQVAE`` config) -> autoencoder keyword arguments
    (``backbone``, ``bottleneck``, ``videogpt``, ``quantizer`` and the shared ones)."""
    options = check_options_dict("quantizer", cfg["quantizer"])
    kind = options.pop("kind", "vq")
    if kind not in QUANTIZER_KINDS:
        raise ConfigError(f"quantizer kind must be one of {QUANTIZER_KINDS}, got {kind!r}")
    return dict(n_dims=cfg["n_dims"], in_channels=cfg["in_channels"], out_channels=cfg["out_channels"],
                backbone="videogpt", bottleneck=kind, embedding_dim=cfg["embedding_dim"], n_codes=cfg["n_codes"],
                videogpt={new: cfg[old] for old, new in VQ_BACKBONE_ARGS.items()},
                quantizer={**options, "beta": cfg["codebook_beta"], "ema_decay": cfg["ema_decay"]})


def check_recon_args(recon_loss: str, recon_loss_factor: float = 1.0, codebook_beta: float | None = None) -> None:
    """The presets' loss arguments: a known ``recon_loss``, ``recon_loss_factor > 0``, ``codebook_beta >= 0``
    (or None: the quantizer's default)."""
    if recon_loss not in RECON_LOSSES:
        raise ConfigError(f"recon_loss must be one of {RECON_LOSSES}, got {recon_loss!r}")
    if not recon_loss_factor > 0 or not (codebook_beta is None or codebook_beta >= 0):
        raise ConfigError(f"need recon_loss_factor > 0 and codebook_beta >= 0, got {recon_loss_factor}, "
                          f"{codebook_beta}")


def require_same_channels(model) -> None:
    """The presets' ``forward`` computes a reconstruction loss: ``out_channels`` must equal ``in_channels``."""
    if model.out_channels != model.in_channels:
        raise ConfigError(f"forward() needs out_channels == in_channels for its reconstruction loss "
                          f"({model.out_channels} != {model.in_channels}); use encode/decode with your own loss")


def add_vq_loss(out: AutoencoderOutput, x: torch.Tensor, recon_loss: str, factor: float) -> AutoencoderOutput:
    """Fill ``out.recon_loss`` and ``out.loss = factor * recon_loss + aux_loss``."""
    out.recon_loss = reconstruction_loss(out.reconstruction, x, recon_loss)
    out.loss = factor * out.recon_loss + out.aux_loss
    return out


class VQVAE(Autoencoder):
    """N-dimensional VQ-VAE: the VideoGPT backbone with a quantizer bottleneck.

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
        codebook_beta: commitment weight; None means the quantizer kind's own
            (:func:`ndvq.quantizers.default_beta`: 0.5 for the default vector quantizer, 0.25 for
            ``lfq``/``simvq``/``residual``/``grouped``). Default None.
        recon_loss_factor: weight of the reconstruction loss in ``loss``. Default 1.0.
        recon_loss: ``"mse"`` (= ``"l2"``) or ``"l1"``. Default ``"mse"``.
        n_head: attention heads in the residual blocks; 0 turns attention off. Default 2.
        attn_type: ``"axial"`` (one attention per spatial axis, VideoGPT) or ``"full"``. Default ``"axial"``.
        attn_dropout: attention dropout. Default 0.0.
        dropout: dropout inside residual blocks. Default 0.0.
        norm: ``"channel"`` (layer norm over each position's channels: no running statistics, the same on a
            crop and on a whole image), ``"batch"`` or ``"group"``. Default ``"channel"``.
        num_groups: group-norm groups (largest divisor of the channels <= this). Default 32.
        ema_decay: EMA decay of the codebook statistics. Default 0.99.
        quantizer: ``QuantizerConfig`` fields as a dict, e.g. ``{"kind": "fsq", "fsq_levels": [8, 5, 5, 5]}``
            or ``{"restart": "replay"}``; None is the default EMA vector quantizer. Default None.

    Attributes:
        validate_inputs: check inputs for NaN/Inf (and decode indices for range). Each check costs a
            host sync; the training loop may set it to False for speed. Shape/dtype checks always run.
        config: the constructor arguments (saved by :meth:`save_pretrained`).

    ``forward(x).loss`` is ``recon_loss_factor * recon_loss + aux_loss`` (Python API only).

    Example:
        >>> model = VQVAE(n_dims=1, in_channels=2, n_hiddens=32, downsample=[4], embedding_dim=16, n_codes=64)
        >>> x = torch.randn(4, 2, 1024)
        >>> codes = model.eval().encode(x)                   # [4, 256]
        >>> torch.allclose(model.decode(codes), model(x).reconstruction, atol=1e-5)
        True
    """

    def __init__(self, n_dims: int = 2, in_channels: int = 3, out_channels: int | None = None, n_hiddens: int = 128,
                 n_res_layers: int = 2, downsample: int | Sequence[int] = 4, embedding_dim: int = 64,
                 n_codes: int = 512, codebook_beta: float | None = None, recon_loss_factor: float = 1.0,
                 recon_loss: str = "mse", n_head: int = 2, attn_type: str = "axial", attn_dropout: float = 0.0,
                 dropout: float = 0.0, norm: str = "channel", num_groups: int = 32, ema_decay: float = 0.99,
                 quantizer: dict | None = None) -> None:
        cfg = vq_flat_config(locals())
        super().__init__(**vq_preset_args(cfg))
        self.config = cfg
        self.recon_loss_kind, self.recon_loss_factor = recon_loss, recon_loss_factor
        accept_legacy_keys(self, _VQ_LEGACY_KEYS)

    def forward(self, x: torch.Tensor) -> AutoencoderOutput:
        """The autoencoder's output plus ``recon_loss`` and ``loss``."""
        require_same_channels(self)
        return add_vq_loss(super().forward(x), x, self.recon_loss_kind, self.recon_loss_factor)


class KLVAE(Autoencoder):
    """Continuous KL-regularised autoencoder: MONAI's ``AutoencoderKL`` layer for layer (the LDM
    backbone with a Gaussian bottleneck), for 1D, 2D and 3D data. :meth:`from_monai_state_dict` and
    :meth:`to_monai_state_dict` convert weights from and to MONAI.

    Args:
        n_dims: spatial axes (1 series/audio, 2 images, 3 volumes/video). Default 2.
        in_channels: input channels. Default 1.
        out_channels: output channels; ``None`` means ``in_channels``. Default None.
        latent_channels: channels of the Gaussian latent. Default 4.
        channels: channels per level; the input is downsampled by 2 between levels, so the latent
            is ``2 ** (len(channels) - 1)`` times smaller per axis. Default (64, 128, 256).
        num_res_blocks: residual blocks per level (encoder and decoder), an int or one per level. Default 2.
        norm_num_groups: GroupNorm groups; must divide every entry of ``channels``. Default 32.
        norm_eps: GroupNorm epsilon. Default 1e-6.
        attention_levels: self-attention after each residual block of a level, one bool per level.
            ``None`` means no attention. Default None.
        with_encoder_nonlocal_attn: residual-attention-residual bottleneck at the end of the
            encoder. Default True.
        with_decoder_nonlocal_attn: the same at the start of the decoder. Default True.
        use_convtranspose: upsample with 2x2 transposed convs (MONAI option). Default False.
        include_fc: output projection in the attention blocks (MONAI option). Default True.
        use_combined_linear: one qkv projection in the attention blocks (MONAI option). Default False.
        use_flash_attention: fused scaled-dot-product attention (MONAI option). Default False.
        final_activation: SiLU before the last conv of encoder and decoder (ndvq's earlier layout;
            MONAI has none; switched on by itself when old weights are loaded). Default False.
        recon_loss: ``"l1"``, ``"l2"`` (= ``"mse"``) or ``"mse"``. Default ``"l1"``.
        kl_weight: weight of the KL term in ``loss``. Default 1e-6.

    Attributes:
        validate_inputs: check inputs and latents for NaN/Inf (one host sync each); set False for
            speed. Shape/dtype/size checks always run. Default True.
        config: the constructor arguments (saved by ``save_pretrained``).

    ``forward(x).loss`` is ``recon_loss + kl_weight * kl_loss`` (Python API only); in eval mode
    ``forward(x).reconstruction == decode(encode(x).mean)``.

    Example:
        >>> model = KLVAE(n_dims=3, in_channels=1, channels=(8, 16), norm_num_groups=8)
        >>> model.latent_shape((32, 32, 32))
        (16, 16, 16)
    """

    def __init__(self, n_dims: int = 2, in_channels: int = 1, out_channels: int | None = None,
                 latent_channels: int = 4, channels: Sequence[int] = (64, 128, 256),
                 num_res_blocks: int | Sequence[int] = 2, norm_num_groups: int = 32, norm_eps: float = 1e-6,
                 attention_levels: Sequence[bool] | None = None, with_encoder_nonlocal_attn: bool = True,
                 with_decoder_nonlocal_attn: bool = True, use_convtranspose: bool = False, include_fc: bool = True,
                 use_combined_linear: bool = False, use_flash_attention: bool = False, final_activation: bool = False,
                 recon_loss: str = "l1", kl_weight: float = 1e-6) -> None:
        check_recon_args(recon_loss)
        if not kl_weight >= 0:
            raise ConfigError(f"kl_weight must be >= 0, got {kl_weight}")
        channels = [int(c) for c in channels]
        cfg = dict(n_dims=n_dims, in_channels=in_channels,
                   out_channels=in_channels if out_channels is None else out_channels,
                   latent_channels=latent_channels, channels=channels,
                   num_res_blocks=num_res_blocks if isinstance(num_res_blocks, int) else list(num_res_blocks),
                   norm_num_groups=norm_num_groups, norm_eps=norm_eps,
                   attention_levels=([False] * len(channels) if attention_levels is None
                                     else [bool(a) for a in attention_levels]),
                   with_encoder_nonlocal_attn=with_encoder_nonlocal_attn,
                   with_decoder_nonlocal_attn=with_decoder_nonlocal_attn, use_convtranspose=use_convtranspose,
                   include_fc=include_fc, use_combined_linear=use_combined_linear,
                   use_flash_attention=use_flash_attention, final_activation=final_activation,
                   recon_loss=recon_loss, kl_weight=kl_weight)
        super().__init__(n_dims=n_dims, in_channels=in_channels, out_channels=cfg["out_channels"], backbone="ldm",
                         bottleneck="gaussian", embedding_dim=latent_channels,
                         ldm={k: cfg[k] for k in KL_BACKBONE_ARGS})
        self.config = cfg
        self.recon_loss_kind, self.kl_weight = recon_loss, kl_weight
        accept_legacy_keys(self, _KL_LEGACY_KEYS)
        # weights of ndvq's earlier layout switch the final SiLU on (LDMBackbone's hook); record it
        self.register_load_state_dict_post_hook(
            lambda module, _: module.config.update(final_activation=module.backbone.final_activation))

    @classmethod
    def from_monai_state_dict(cls, state_dict, **arch) -> KLVAE:
        """A ``KLVAE`` built from ``arch`` (its own arguments, or MONAI's: ``spatial_dims``, ...) holding the
        weights of a MONAI ``AutoencoderKL`` (core or MONAI Generative names; raw or in a
        ``{"state_dict"|"model"|"autoencoder": ...}`` wrapper). A mismatch is one ``CheckpointError``
        line naming the first offending key.

        Example:
            >>> m = KLVAE(n_dims=2, in_channels=1, channels=(8, 16), norm_num_groups=4)
            >>> KLVAE.from_monai_state_dict(m.to_monai_state_dict(), spatial_dims=2, in_channels=1,
            ...                             channels=(8, 16), norm_num_groups=4).latent_shape((32, 32))
            (16, 16)
        """
        theirs = {k for k in arch if k in monai.MONAI_ARCH_KEYS and monai.MONAI_ARCH_KEYS[k] != k}
        args = {**{k: v for k, v in arch.items() if k not in theirs and k != "use_checkpoint"},
                **monai.monai_arch({k: arch[k] for k in theirs})}
        model = cls(**args)
        return monai.from_monai_state_dict(model, state_dict)

    def to_monai_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under MONAI ``AutoencoderKL`` names (loads with ``strict=True`` into
        ``AutoencoderKL(**model.monai_args())``)."""
        return monai.to_monai_state_dict(self)

    def monai_args(self) -> dict:
        """MONAI ``AutoencoderKL`` keyword arguments of the same network."""
        inverse = {v: k for k, v in monai.MONAI_ARCH_KEYS.items()}
        return {inverse[k]: v for k, v in self.config.items() if k in inverse}

    def forward(self, x: torch.Tensor) -> AutoencoderOutput:
        """The autoencoder's output plus ``recon_loss`` and ``loss = recon_loss + kl_weight * kl_loss``."""
        require_same_channels(self)
        out = super().forward(x)
        out.recon_loss = reconstruction_loss(out.reconstruction, x, self.recon_loss_kind)
        out.loss = out.recon_loss + self.kl_weight * out.kl_loss
        return out
