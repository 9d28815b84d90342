"""Config -> model / dataset / losses / tracker: the only code that reads :class:`ndvq.config.Config`.

Modules take plain keyword arguments; these functions turn the validated config into those
arguments, so a checkpoint can rebuild its model from ``model_class`` + ``model_args`` alone.
Kind-specific parts (VQ-VAE, hierarchical, KL-VAE) live here in small functions so the
training loop stays the same for all of them.

Example:
    >>> from ndvq.config import load_config
    >>> cfg = load_config(None, ["model.n_hiddens=16"])
    >>> name, kwargs = model_args(cfg)
    >>> name, kwargs["n_hiddens"]
    ('VQVAE', 16)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ndvq.config import Config, ConfigError

__all__ = [
    "MODEL_CLASSES",
    "model_args",
    "build_model",
    "model_from_args",
    "build_dataset",
    "check_data_matches_model",
    "build_loss",
    "build_tracker",
    "downsample_factor",
    "encode_batch",
    "decode_codes",
    "counts_of",
    "bits_per_code",
]

# model.kind -> class name (the class is imported lazily from ndvq.networks)
MODEL_CLASSES = {"vqvae": "VQVAE", "hierarchical": "HierarchicalVQVAE", "klvae": "KLVAE"}


def _vqvae_args(cfg: Config) -> dict[str, Any]:
    m = cfg.model
    return dict(
        n_dims=m.n_dims, in_channels=m.in_channels, out_channels=m.out_channels, n_hiddens=m.n_hiddens,
        n_res_layers=m.n_res_layers, downsample=list(m.downsample), embedding_dim=m.embedding_dim,
        n_codes=m.n_codes, codebook_beta=m.codebook_beta, recon_loss_factor=m.recon_loss_factor,
        recon_loss=m.recon_loss, n_head=m.n_head, attn_type=m.attn_type, attn_dropout=m.attn_dropout,
        dropout=m.dropout, norm=m.norm, num_groups=m.num_groups, ema_decay=m.ema_decay,
        quantizer=m.quantizer.model_dump(mode="json"),
    )


def _hierarchical_args(cfg: Config) -> dict[str, Any]:
    top = cfg.model.top
    return {**_vqvae_args(cfg), "top_downsample": list(top.downsample), "top_n_codes": top.n_codes,
            "top_embedding_dim": top.embedding_dim}


def _klvae_args(cfg: Config) -> dict[str, Any]:
    m, k = cfg.model, cfg.model.klvae
    return dict(
        n_dims=m.n_dims, in_channels=m.in_channels, out_channels=m.out_channels or m.in_channels,
        latent_channels=k.latent_channels, channels=list(k.channels), num_res_blocks=k.num_res_blocks,
        norm_num_groups=k.norm_num_groups, norm_eps=k.norm_eps, attention_levels=list(k.attention_levels),
        with_encoder_nonlocal_attn=k.with_encoder_nonlocal_attn,
        with_decoder_nonlocal_attn=k.with_decoder_nonlocal_attn, recon_loss=m.recon_loss,
        kl_weight=cfg.loss.kl_weight,
    )


def model_args(cfg: Config) -> tuple[str, dict[str, Any]]:
    """``(class name, constructor kwargs)`` for ``cfg.model`` (kwargs are JSON-able)."""
    make = {"vqvae": _vqvae_args, "hierarchical": _hierarchical_args, "klvae": _klvae_args}[cfg.model.kind]
    return MODEL_CLASSES[cfg.model.kind], make(cfg)


def model_from_args(class_name: str, kwargs: dict[str, Any]) -> nn.Module:
    """Instantiate ``ndvq.networks.<class_name>(**kwargs)``; an unknown name is a ValueError."""
    import importlib

    modules = {"VQVAE": "vqvae", "HierarchicalVQVAE": "hierarchical", "KLVAE": "klvae"}
    if class_name not in modules:
        raise ValueError(f"unknown model class {class_name!r}; expected one of {sorted(modules)}")
    return getattr(importlib.import_module(f"ndvq.networks.{modules[class_name]}"), class_name)(**kwargs)


def build_model(cfg: Config) -> tuple[nn.Module, str, dict[str, Any]]:
    """The model for ``cfg``, with its class name and constructor kwargs (stored in checkpoints)."""
    name, kwargs = model_args(cfg)
    try:
        return model_from_args(name, kwargs), name, kwargs
    except (ValueError, TypeError) as e:
        raise ConfigError(f"cannot build {name} from the model config: {e}") from None


def downsample_factor(cfg: Config) -> tuple[int, ...]:
    """Per-axis total downsampling of the model (inputs must be a multiple of it)."""
    m = cfg.model
    if m.kind == "klvae":
        return (2 ** (len(m.klvae.channels) - 1),) * m.n_dims
    ds = list(m.downsample) * (m.n_dims if len(m.downsample) == 1 else 1)
    if m.kind == "hierarchical":
        top = list(m.top.downsample) * (m.n_dims if len(m.top.downsample) == 1 else 1)
        ds = [a * b for a, b in zip(ds, top)]
    return tuple(ds)


def build_dataset(cfg: Config, split: str, stats_dir: str | Path | None = None, pad: bool = False):
    """``ndvq.data.create_dataset`` for ``cfg.data``.

    Args:
        cfg: the config.
        split: ``"train" | "val" | "all"``.
        stats_dir: where series statistics are saved/loaded. Default None.
        pad: pad whole items to a multiple of the model's downsampling (eval/encode). Default False.
    """
    from ndvq.data import create_dataset

    options = cfg.data.model_dump()
    kind = options.pop("kind")
    if pad:
        options["pad_multiple"] = downsample_factor(cfg)
    if stats_dir is not None:
        options["stats_dir"] = Path(stats_dir)
    ds = create_dataset(kind, split, **options)
    if len(ds) == 0:
        where = f" in {str(cfg.data.root)!r}" if cfg.data.root else ""
        raise ConfigError(f"the {split!r} split of data.kind={kind!r}{where} is empty")
    return ds


def check_data_matches_model(cfg: Config, dataset) -> None:
    """One-line ConfigError when the data's channels / dimensionality do not fit ``cfg.model``."""
    n_dims, channels = getattr(dataset, "n_dims", None), getattr(dataset, "channels", None)
    if n_dims is not None and n_dims != cfg.model.n_dims:
        raise ConfigError(f"data.kind={cfg.data.kind!r} gives {n_dims}D items but model.n_dims={cfg.model.n_dims}; "
                          f"set model.n_dims={n_dims}")
    if channels is not None and channels != cfg.model.in_channels:
        raise ConfigError(f"the data has {channels} channel(s) but model.in_channels={cfg.model.in_channels}; "
                          f"set model.in_channels={channels} (or data.channels={cfg.model.in_channels})")


def build_loss(cfg: Config) -> nn.Module | None:
    """The extra objective (perceptual / adversarial), or None when both weights are 0.

    Returns ``ndvq.losses.AutoencoderLoss``; its ``.discriminator`` (None or a Module) gets its own
    optimizer in the training loop.
    """
    loss = cfg.loss
    if loss.perceptual_weight == 0 and loss.adversarial_weight == 0:
        return None
    from ndvq.losses import AutoencoderLoss

    return AutoencoderLoss(
        perceptual_weight=loss.perceptual_weight, perceptual_weights=loss.perceptual_weights,
        adversarial_weight=loss.adversarial_weight, adversarial_loss=loss.adversarial_loss,
        n_dims=cfg.model.n_dims, in_channels=cfg.model.in_channels, disc_channels=loss.disc_channels,
        disc_layers=loss.disc_layers, warmup_epochs=loss.adversarial_warmup_epochs,
        perceptual_slices=loss.perceptual_slices,
    )


def build_tracker(counts: torch.Tensor, window: int) -> nn.Module | None:
    """A ``CodeUsageTracker`` shaped like the model's per-code ``counts [G, K]`` (None if unavailable)."""
    try:
        from ndvq.quantizers.usage import CodeUsageTracker
    except ImportError:
        return None

    g, k = counts.shape
    return CodeUsageTracker(g, k, window).to(counts.device)


def counts_of(out) -> torch.Tensor | None:
    """The ``[G, K]`` per-code counts of a model output (levels of a hierarchical model are
    stacked when they have the same K), or None for models without codes (KL-VAE)."""
    counts = getattr(out, "counts", None)
    if counts is None:
        return None
    if isinstance(counts, (list, tuple)):
        counts = [c.reshape(-1, c.shape[-1]) for c in counts]
        if len({c.shape[-1] for c in counts}) != 1:
            return counts[-1]  # differing codebook sizes: track the bottom level
        counts = torch.cat(counts)
    return counts.reshape(-1, counts.shape[-1]).float()


def _as_levels(codes) -> list[torch.Tensor]:
    if isinstance(codes, torch.Tensor):
        return [codes]
    if isinstance(codes, dict):
        return list(codes.values())
    if isinstance(codes, (list, tuple)):
        return [c for c in codes]
    for name in ("indices", "codes"):  # a dataclass output
        if hasattr(codes, name):
            return _as_levels(getattr(codes, name))
    raise TypeError(f"model.encode returned {type(codes).__name__}; expected a tensor or a list of tensors")


@torch.no_grad()
def encode_batch(model: nn.Module, kind: str, x: torch.Tensor) -> list[torch.Tensor]:
    """Encode ``x [B, C, *S]`` to one tensor per level.

    VQ models (``vqvae``, ``hierarchical``): integer codes ``[B, *latent(, G)]`` per level
    (hierarchical: ``[top, bottom]`` as returned by ``model.encode``).
    KL-VAE: the posterior mean ``[B, latent_channels, *latent]`` (``model.encode(x).mean``).
    """
    enc = model.encode(x)
    if kind == "klvae":
        mean = getattr(enc, "mean", None)
        if mean is None and isinstance(enc, (tuple, list)):
            mean = enc[0]
        if mean is None:
            raise TypeError("KLVAE.encode must return an object with .mean (the posterior mean)")
        return [mean.float()]
    return [c.long() for c in _as_levels(enc)]


@torch.no_grad()
def decode_codes(model: nn.Module, kind: str, levels: list[torch.Tensor]) -> torch.Tensor:
    """Inverse of :func:`encode_batch`: codes (or KL means) per level -> reconstruction ``[B, C, *S]``."""
    codes = levels[0] if len(levels) == 1 else list(levels)
    out = model.decode(codes)
    return getattr(out, "reconstruction", out)


def bits_per_code(model_cfg: dict[str, Any], level: int, n_levels: int) -> float:
    """log2 of the codebook size behind level ``level`` of the encoded codes (fixed-length code)."""
    q = model_cfg.get("quantizer") or {}
    n_codes = model_cfg.get("n_codes", 2)
    if q.get("kind") == "fsq":
        n_codes = math.prod(q.get("levels", [n_codes]))
    if n_levels == 2 and level == 0 and model_cfg.get("top_n_codes"):
        n_codes = model_cfg["top_n_codes"]
    return math.log2(max(n_codes, 2))
