"""Config -> objects: the model, the objective, the datasets, and the facts a run records about its model.

Config sections pass straight through: their fields are the constructors' keyword arguments
(``tests/test_passthrough.py`` checks it), so nothing here lists a field by hand.

Example:
    >>> from ndvq.config import load_config
    >>> cfg = load_config(None, ["model.n_codes=64"])
    >>> facts = model_facts(cfg)
    >>> facts["class"], facts["codebook_sizes"]
    ('Autoencoder', [64])
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ndvq.config import Config, validate_config
from ndvq.errors import ConfigError, DataError

__all__ = ["model_spec", "build_model", "model_facts", "build_objective", "build_dataset", "check_data_fits_model",
           "MemoryEstimate", "estimate_memory", "available_memory", "check_memory"]


def model_spec(cfg: Config) -> tuple[str, dict[str, Any]]:
    """``(class name, constructor kwargs)`` of the model ``cfg.model`` describes (kwargs are JSON-able).

    ``model.kind=hierarchical`` builds a ``HierarchicalAutoencoder`` from every model field but ``kind``;
    every other kind builds an ``Autoencoder`` from every field but ``kind`` and ``top``.
    """
    if cfg.model.kind == "hierarchical":
        kwargs = cfg.model.model_dump(mode="json", exclude={"kind"})
    else:
        kwargs = cfg.model.model_dump(mode="json", exclude={"kind", "top"})
    if kwargs["in_channels"] == "auto":  # not resolved from data (resolve_auto): facts need no channel count
        kwargs["in_channels"] = 3
    return ("HierarchicalAutoencoder" if cfg.model.kind == "hierarchical" else "Autoencoder"), kwargs


def resolve_auto(cfg: Config, dataset) -> Config:
    """``cfg`` with what the train split ``dataset`` decided pinned: ``model.in_channels="auto"`` replaced by
    its channel count, and the unset ``data.*`` options of its ``pinned_options()`` (channels, the audio
    sample rate) set, so the val split and later ``eval`` / ``encode`` of other files read items as
    training did."""
    channels = int(getattr(dataset, "channels", None) or 3)
    update: dict[str, Any] = {}
    if cfg.model.in_channels == "auto":
        update["model"] = cfg.model.model_copy(update={"in_channels": channels})
    pins = getattr(dataset, "pinned_options", dict)()
    pins = {k: v for k, v in pins.items() if getattr(cfg.data, k) is None}
    if pins and cfg.data.shards is None:
        update["data"] = cfg.data.model_copy(update=pins)
    return cfg.model_copy(update=update) if update else cfg


def build_model(cfg: Config) -> nn.Module:
    """The model for ``cfg`` (a one-line :class:`ConfigError` when the constructor refuses the values)."""
    from ndvq.models.pretrained import model_class

    name, kwargs = model_spec(cfg)
    try:
        return model_class(name)(**kwargs)
    except ValueError as e:  # the constructors' own checks (direct Python use) catch what the schema cannot
        raise ConfigError(f"cannot build {name} from the model config: {' '.join(str(e).split())}") from None


def model_facts(cfg: Config | dict, model: nn.Module | None = None,
                item_shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """What a run records about its model in ``model.json`` (docs/design.md), asked of the model itself.

    Args:
        cfg: the run's config (a :class:`Config` or its dict, e.g. a recorded ``config.yaml``).
        model: the built model; default None builds it on the ``meta`` device (no memory, no weights).
        item_shape: spatial shape of a training item, for ``code_shapes``. Default None: no ``code_shapes``.

    Returns:
        ``{"class", "args", "codebook_sizes", "downsample", "code_shapes", "n_parameters"}``.
    """
    cfg = cfg if isinstance(cfg, Config) else validate_config(cfg)
    name, kwargs = model_spec(cfg)
    if model is None:
        with torch.device("meta"):
            model = build_model(cfg)
    shapes = None
    if item_shape is not None:
        shapes = [list(s) for s in model.code_shapes(tuple(item_shape))]
    return {"class": name, "args": kwargs, "codebook_sizes": list(model.codebook_sizes),
            "downsample": list(model.downsample), "code_shapes": shapes,
            "n_parameters": sum(p.numel() for p in model.parameters())}


def build_objective(cfg: Config) -> nn.Module:
    """The :class:`ndvq.objectives.Objective` for ``cfg.loss`` (it owns every loss weight)."""
    from ndvq.objectives import Objective

    return Objective(**cfg.loss.model_dump(exclude={"disc_learning_rate"}), n_dims=cfg.model.n_dims,
                     in_channels=model_spec(cfg)[1]["in_channels"])


def build_dataset(cfg: Config, split: str, stats_dir: str | Path | None = None,
                  pad_multiple: tuple[int, ...] | None = None):
    """``ndvq.data.create_dataset`` for ``cfg.data`` (its fields pass straight through), or the
    :class:`ndvq.data.shards.ShardDataset` of ``data.shards`` when it is set.

    Args:
        cfg: the config.
        split: ``"train" | "val" | "all"``.
        stats_dir: where series statistics are saved/loaded. Default None.
        pad_multiple: pad whole items to a multiple of this per-axis factor (eval/encode: the model's
            ``downsample``). Default None: no padding.
    """
    from ndvq.data import create_dataset
    from ndvq.data.shards import SHARD_FIELDS, shard_dataset

    data = cfg.data.model_dump()
    if data["shards"] is not None and pad_multiple is None:  # streamed from tar shards (docs/shards.md)
        return shard_dataset(data, split)
    if data["shards"] is not None and data["root"] is None:
        raise DataError("eval / encode read whole files from a folder: pass --data DIR or data.root=DIR "
                        "(data.shards streams training items only)")
    ds = create_dataset(**{k: v for k, v in data.items() if k not in SHARD_FIELDS}, split=split,
                        pad_multiple=pad_multiple, stats_dir=Path(stats_dir) if stats_dir is not None else None)
    if len(ds) == 0 and not (split == "val" and "no validation" in getattr(ds, "layout", "")):
        where = f" in {str(cfg.data.root)!r}" if cfg.data.root else ""
        raise DataError(f"the {split!r} split of data.kind={cfg.data.kind!r}{where} is empty")
    return ds


def fit_items(cfg: Config, train_ds, downsample: tuple[int, ...]) -> tuple[Config, str] | None:
    """The config with a window / patch size that fits the items, when the one in effect is mostly padding.

    Applies only to a size the user did not set (``data.segment_length`` / ``data.patch_size`` left at the
    built-in default: a value written in a config file or an override is kept, with the start summary's
    warning): when the train split's mean padding share exceeds ``PADDING_WARN_SHARE`` and the dataset
    suggests a smaller size (``dataset.suggested_fix``), that size rounded down to a multiple of the model's
    ``downsample`` is used.

    Args:
        cfg: the run's config.
        train_ds: the train split built with ``cfg``.
        downsample: the model's total downsampling per axis.

    Returns:
        ``(config, line for the start summary)`` or None (nothing to change).
    """
    from ndvq.config.load import parse_overrides
    from ndvq.data.common import PADDING_WARN_SHARE

    fix = getattr(train_ds, "suggested_fix", None)
    share = train_ds.padding_share() if fix and hasattr(train_ds, "padding_share") else None
    if share is None or share <= PADDING_WARN_SHARE:
        return None
    [(key, value)] = parse_overrides([fix])
    field = key.split(".")[-1]
    if field in cfg.data.model_fields_set:
        return None
    values = [int(v) for v in (value if isinstance(value, list) else [value])]
    fitted = [v // d * d for v, d in zip(values, downsample)]
    old = getattr(cfg.data, field)
    if any(v < d for v, d in zip(fitted, downsample)) or fitted == list(old if isinstance(old, list) else [old]):
        return None
    new = fitted if isinstance(value, list) else fitted[0]
    data = cfg.data.model_copy(update={field: new})
    if field == "segment_length" and cfg.data.hop_length is not None and cfg.data.hop_length > new:
        data = data.model_copy(update={"hop_length": None})
    line = (f"data.{field} {old} -> {new}: {share:.0%} of the average train item was padding (set data.{field} "
            f"to keep a size)")
    return cfg.model_copy(update={"data": data}), line


def check_data_fits_model(cfg: Config, dataset, model: nn.Module, trained: bool = False) -> None:
    """One-line :class:`ConfigError` when the data's dimensionality or channels do not fit the model.

    Args:
        cfg: the config the data was read with.
        dataset: the data.
        model: the model.
        trained: the model is a trained run's (eval / encode / compress): the fix is on the data side.
            Default False (training: either side).
    """
    n_dims, channels = getattr(dataset, "n_dims", None), getattr(dataset, "channels", None)
    if n_dims is not None and n_dims != model.n_dims:
        fix = "pass the data.kind it was trained on" if trained else f"set model.n_dims={n_dims}"
        raise ConfigError(f"data.kind={cfg.data.kind!r} gives {n_dims}D items but model.n_dims={model.n_dims}; {fix}")
    if channels is not None and channels != model.in_channels:
        fix = (f"pass data.channels={model.in_channels}" if trained else
               f"set model.in_channels={channels} or model.in_channels=auto (or data.channels={model.in_channels})")
        raise ConfigError(f"the data has {channels} channel(s) but model.in_channels={model.in_channels}; {fix}")


# ---------------------------------------------------------------------------------------- memory
_GB = 1024 ** 3
_BYTES_PER_PARAM = {"infer": 4, "train": 16}  # fp32 weights; + gradients + two AdamW moments when training


@dataclass
class MemoryEstimate:
    """Memory a model needs before any activation: weights (+ gradients and optimiser moments when training).

    Attributes:
        n_parameters: all parameters.
        n_codebook: parameters and buffers of the bottleneck (codebooks, EMA statistics).
        n_buffers: all buffers.
        bytes_total: the estimate in bytes (activations not included).
        available: bytes of memory available now (None when unknown).
        training: the estimate includes gradients and AdamW moments.
    """

    n_parameters: int
    n_codebook: int
    n_buffers: int
    bytes_total: int
    available: int | None
    training: bool = True

    def text(self) -> str:
        """One line, e.g. ``memory     ~0.01 GB for weights, gradients and optimizer (1.2M parameters, ...)``."""
        what = "weights, gradients and optimizer" if self.training else "weights"
        avail = f" of {_size(self.available)} available" if self.available is not None else ""
        return (f"~{_size(self.bytes_total)}{avail} for {what} ({self.n_parameters / 1e6:.2f}M parameters, "
                f"codebooks {self.n_codebook / 1e6:.2f}M values; activations not included)")


def _size(n: int) -> str:
    return f"{n / _GB:.1f} GB" if n >= _GB / 10 else f"{n / 1024 ** 2:.1f} MB"


def available_memory() -> int | None:
    """Bytes of memory available now: ``MemAvailable`` of ``/proc/meminfo``, else ``os.sysconf``; None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def estimate_memory(cfg: Config, training: bool = True) -> MemoryEstimate:
    """Estimate the memory of ``cfg``'s model without allocating it (the model is built on the ``meta`` device).

    Args:
        cfg: the validated config.
        training: count gradients and AdamW moments too (16 bytes per parameter instead of 4). Default True.

    Example:
        >>> from ndvq.config import load_config
        >>> estimate_memory(load_config(None, ["model.n_codes=64"])).n_parameters > 0
        True
    """
    with torch.device("meta"):
        model = build_model(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    n_buffers = sum(b.numel() for b in model.buffers())
    bottleneck = [m for name, m in model.named_children() if "bottleneck" in name or "quantizer" in name]
    n_codebook = sum(t.numel() for m in bottleneck for t in (*m.parameters(), *m.buffers()))
    total = n_params * _BYTES_PER_PARAM["train" if training else "infer"] + n_buffers * 4
    return MemoryEstimate(n_params, n_codebook, n_buffers, total, available_memory(), training)


def check_memory(cfg: Config, where: str = "the model config", training: bool = True) -> MemoryEstimate:
    """:func:`estimate_memory` and a one-line :class:`ConfigError` when it exceeds the memory available.

    Args:
        cfg: the validated config.
        where: what the model args came from, for the message (a config file, a checkpoint). Default
            ``"the model config"``.
        training: as in :func:`estimate_memory`. Default True.
    """
    try:
        est = estimate_memory(cfg, training)
    except (RuntimeError, OverflowError, MemoryError) as e:  # sizes beyond what a tensor can hold
        raise ConfigError(f"{where} describes a model too large to build (model.n_codes={cfg.model.n_codes}, "
                          f"model.embedding_dim={cfg.model.embedding_dim}): {' '.join(str(e).split())[:160]}") from None
    if est.available is not None and est.bytes_total > est.available:
        m = cfg.model
        raise ConfigError(f"{where} needs about {est.bytes_total / _GB:.1f} GB for the model alone "
                          f"({est.n_parameters:,} parameters, {est.n_codebook:,} codebook values; model.n_codes="
                          f"{m.n_codes}, model.embedding_dim={m.embedding_dim}) but only "
                          f"{est.available / _GB:.1f} GB of memory is available; lower those sizes")
    return est
