"""``Autoencoder``: a backbone (encoder/decoder stack) times a bottleneck (any quantizer or a Gaussian).

``x [B, C, *S]`` -> ``backbone.encode`` -> ``z [B, E_in, *L]`` -> bottleneck -> ``latent [B, E, *L]``
-> ``backbone.decode`` -> ``[B, C_out, *S]``. Any pair builds, for 1D, 2D and 3D data: e.g. the LDM
backbone with a VQ bottleneck is a VQGAN-style tokenizer, with a Gaussian the latent-diffusion
autoencoder; the VideoGPT backbone with a VQ bottleneck is the classic VQ-VAE.

``forward`` returns what the model computes (reconstruction, the quantizer's own loss or the
unweighted KL, code statistics) and no weighted total: the objective (``ndvq.objectives``) owns
every loss weight.

Example:
    >>> import torch
    >>> from ndvq.models import Autoencoder
    >>> model = Autoencoder(n_dims=2, in_channels=3, backbone="ldm", bottleneck="fsq", embedding_dim=8,
    ...                     ldm={"channels": [16, 32], "norm_num_groups": 8}, quantizer={"fsq_levels": [8, 5, 5]})
    >>> out = model(torch.randn(2, 3, 32, 32))
    >>> out.reconstruction.shape, out.indices.shape, model.codebook_sizes, model.downsample
    (torch.Size([2, 3, 32, 32]), torch.Size([2, 16, 16]), (200,), (2, 2))
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import torch
from torch import nn

from ndvq import nd
from ndvq.errors import ConfigError
from ndvq.models.backbones import BACKBONES
from ndvq.models.backbones.checkpointing import set_activation_checkpointing
from ndvq.models.bottleneck import build_bottleneck
from ndvq.models.checks import InputChecks
from ndvq.models.outputs import AutoencoderOutput, BottleneckOutput, GaussianLatent
from ndvq.models.pretrained import PretrainedMixin, to_jsonable

__all__ = ["Autoencoder", "autoencoder_output", "backbone_options", "check_options_dict", "positive_int",
           "DEFAULT_EMBEDDING_DIM"]

#: ``embedding_dim=None`` means this many channels: 64 for quantizers, 4 (latent channels) for a Gaussian.
DEFAULT_EMBEDDING_DIM = {"quantizer": 64, "gaussian": 4}
# arguments of a backbone that the autoencoder fills itself (not part of the ``videogpt``/``ldm`` dicts)
_FILLED = {"self", "n_dims", "in_channels", "out_channels", "embedding_dim", "latent_channels", "condition_channels"}


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` must be an int >= ``minimum``; raises ``ConfigError`` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_options_dict(name: str, value: Any) -> dict:
    """``value`` must be a dict (or None = ``{}``); raises ``TypeError`` otherwise."""
    if value is not None and not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict of options or None, got {type(value).__name__}: {value!r}")
    return dict(value or {})


def backbone_options(backbone: str, options: dict | None) -> dict:
    """Check a ``videogpt``/``ldm`` options dict against the backbone's keyword arguments."""
    if backbone not in BACKBONES:
        raise ConfigError(f"backbone must be one of {tuple(BACKBONES)}, got {backbone!r}")
    options = check_options_dict(backbone, options)
    allowed = set(inspect.signature(BACKBONES[backbone]).parameters) - _FILLED
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"{backbone} got unknown options {unknown}; expected a subset of {sorted(allowed)}")
    return options


class Autoencoder(InputChecks, PretrainedMixin, nn.Module):
    """Backbone x bottleneck autoencoder for 1D, 2D and 3D data.

    Args:
        n_dims: spatial axes: 1 (audio, series), 2 (images), 3 (video, volumes). Default 2.
        in_channels: input channels. Default 3.
        out_channels: output channels; None means ``in_channels``. Default None.
        backbone: ``"videogpt"`` (:class:`~ndvq.models.backbones.VideoGPTBackbone`) or ``"ldm"``
            (:class:`~ndvq.models.backbones.LDMBackbone`). Default ``"videogpt"``.
        bottleneck: a quantizer kind (``"vq"``, ``"residual"``, ``"grouped"``, ``"fsq"``, ``"lfq"``,
            ``"simvq"``) or ``"gaussian"``. Default ``"vq"``.
        embedding_dim: latent channels ``E`` (code vector width, or Gaussian latent channels); None
            means 64 for quantizers and 4 for ``"gaussian"``. Default None.
        n_codes: codes per codebook (quantizers only; FSQ takes its size from ``fsq_levels``). Default 512.
        videogpt: options of the VideoGPT backbone, e.g. ``{"n_hiddens": 64, "downsample": [1, 4, 4]}``;
            None = its defaults. Used only with ``backbone="videogpt"``. Default None.
        ldm: options of the LDM backbone, e.g. ``{"channels": [64, 128], "attention_levels": [False, True]}``;
            None = its defaults. Used only with ``backbone="ldm"``. Default None.
        quantizer: quantizer options (:func:`ndvq.quantizers.build_quantizer`: ``beta``, ``ema_decay``,
            ``restart``, ``fsq_levels``, ``num_quantizers``, ...); ignored for ``"gaussian"``. Default None.

    Attributes:
        backbone, bottleneck: the two parts.
        validate_inputs: check inputs for NaN/Inf and decode indices for range (each costs a host
            sync); shape/dtype checks always run. Default True.
        config: the constructor arguments (saved by :meth:`save_pretrained`).

    Example:
        >>> model = Autoencoder(n_dims=1, in_channels=2, videogpt={"n_hiddens": 32, "downsample": 4}, n_codes=64)
        >>> x = torch.randn(4, 2, 1024)
        >>> codes = model.eval().encode(x)                   # [4, 256]
        >>> torch.allclose(model.decode(codes), model(x).reconstruction, atol=1e-5)
        True
    """

    def __init__(self, n_dims: int = 2, in_channels: int = 3, out_channels: int | None = None,
                 backbone: str = "videogpt", bottleneck: str = "vq", embedding_dim: int | None = None,
                 n_codes: int = 512, videogpt: dict | None = None, ldm: dict | None = None,
                 quantizer: dict | None = None) -> None:
        super().__init__()
        self.config = to_jsonable(dict(
            n_dims=n_dims, in_channels=in_channels, out_channels=out_channels, backbone=backbone,
            bottleneck=bottleneck, embedding_dim=embedding_dim, n_codes=n_codes, videogpt=videogpt, ldm=ldm,
            quantizer=quantizer))
        nd.check_n_dims(n_dims)
        out_channels = in_channels if out_channels is None else out_channels
        positive_int("in_channels", in_channels)
        positive_int("out_channels", out_channels)
        positive_int("n_codes", n_codes, 2)
        if embedding_dim is None:
            embedding_dim = DEFAULT_EMBEDDING_DIM["gaussian" if bottleneck == "gaussian" else "quantizer"]
        positive_int("embedding_dim", embedding_dim)
        options = backbone_options(backbone, {"videogpt": videogpt, "ldm": ldm}.get(backbone))
        quantizer = check_options_dict("quantizer", quantizer)
        self.n_dims, self.in_channels, self.out_channels, self.embedding_dim = (
            n_dims, in_channels, out_channels, embedding_dim)
        self.validate_inputs = True
        self.bottleneck = build_bottleneck(bottleneck, n_dims, embedding_dim, n_codes, quantizer)
        self.backbone = BACKBONES[backbone](n_dims, in_channels, out_channels, embedding_dim,
                                            latent_channels=self.bottleneck.in_channels, **options)

    # ------------------------------------------------------------------ facts
    @property
    def downsample(self) -> tuple[int, ...]:
        """Total downsampling per axis (asked of the backbone)."""
        return self.backbone.downsample

    @property
    def downsample_rule(self) -> str:
        return self.backbone.downsample_rule

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """Codes per index column (``()`` for a Gaussian bottleneck)."""
        return self.bottleneck.codebook_sizes

    @property
    def quantizer(self) -> nn.Module | None:
        """The quantizer module, or None for a Gaussian bottleneck."""
        return getattr(self.bottleneck, "quantizer", None)

    def code_shapes(self, input_shape) -> list[tuple[int, ...]]:
        """Per-item shape of every code grid for an input spatial shape: ``[(*L,)]`` or ``[(*L, G)]``;
        ``[]`` for a Gaussian bottleneck."""
        if not self.codebook_sizes:
            return []
        return [self.latent_shape(input_shape) + self.bottleneck.index_suffix]

    def codebook_parameters(self) -> list[nn.Parameter]:
        """Parameters that get ``quantizer.codebook_lr`` (empty for EMA codebooks and a Gaussian)."""
        return self.bottleneck.codebook_parameters()

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Recompute the backbone blocks' activations in the backward pass instead of storing them
        (``train.activation_checkpointing``; MONAI's ``use_checkpoint``): less memory, about one
        more forward pass per step. Not part of ``config``: it does not change the network."""
        set_activation_checkpointing(self, enabled)

    # ------------------------------------------------------------------ encode / decode / forward
    def encode(self, x: torch.Tensor) -> torch.Tensor | GaussianLatent:
        """``x [B, in_channels, *S]`` -> code indices ``[B, *L]`` (``[B, *L, G]`` for multi-codebook
        quantizers, ``torch.long``) or a ``GaussianLatent(mean, std)``. Call ``model.eval()`` first:
        in training mode a quantizer updates its codebook."""
        self.check_input(x)
        return self.bottleneck.encode(self.backbone.encode(x))

    def decode(self, codes: torch.Tensor | GaussianLatent) -> torch.Tensor:
        """Code indices (or, for a Gaussian, a latent ``[B, E, *L]`` or ``GaussianLatent``, whose mean
        is used) -> reconstruction ``[B, out_channels, *S]``."""
        if self.codebook_sizes:
            self.check_indices(codes, self.bottleneck.index_suffix, max(self.codebook_sizes), "indices")
        else:
            codes = self.bottleneck.decode(codes)
            self.check_tensor(codes, self.embedding_dim, "latent")
        return self.backbone.decode(self.bottleneck.decode(codes))

    def forward(self, x: torch.Tensor) -> AutoencoderOutput:
        """Encode, pass the bottleneck, decode; see :class:`~ndvq.models.outputs.AutoencoderOutput`.
        In eval mode ``forward(x).reconstruction == decode(encode(x))``."""
        self.check_input(x)
        b = self.bottleneck(self.backbone.encode(x))
        return autoencoder_output(b, self.backbone.decode(b.latent))


def autoencoder_output(b: BottleneckOutput, reconstruction: torch.Tensor) -> AutoencoderOutput:
    """An :class:`AutoencoderOutput` holding ``reconstruction`` and every field of ``b`` but its latent."""
    fields = {f.name: getattr(b, f.name) for f in dataclasses.fields(b) if f.name != "latent"}
    return AutoencoderOutput(reconstruction=reconstruction, **fields)
