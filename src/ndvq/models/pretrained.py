"""Save and load models as a folder, and the one model registry.

A folder holds ``config.json`` (``_class_name`` + the constructor keyword arguments) and
``model.safetensors`` (the state dict); loading never unpickles anything. :data:`MODEL_REGISTRY`
maps every model class name to its class (imported on first use), :func:`model_class` asks it,
and :func:`load_pretrained` rebuilds any model from its folder alone.

Example:
    >>> from ndvq import VQVAE, load_pretrained
    >>> model = VQVAE(n_dims=1, in_channels=1, n_hiddens=16, downsample=[4], embedding_dim=8, n_codes=16)
    >>> model.save_pretrained("my_model")             # my_model/config.json, my_model/model.safetensors
    >>> same = VQVAE.from_pretrained("my_model")
    >>> also = load_pretrained("my_model")            # dispatches on config.json's _class_name
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ndvq.errors import CheckpointError

__all__ = ["PretrainedMixin", "load_pretrained", "model_class", "MODEL_REGISTRY", "CONFIG_NAME", "WEIGHTS_NAME",
           "accept_legacy_keys", "to_jsonable", "read_pretrained_config"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

# class name -> defining module; modules are imported by name on first use, so this file imports none of
# them (``ndvq.compat`` sits above ``ndvq.models`` in the import order).
_WHERE = {
    "Autoencoder": "ndvq.models.autoencoder",
    "HierarchicalAutoencoder": "ndvq.models.hierarchical",
    "VQVAE": "ndvq.models.presets",
    "KLVAE": "ndvq.models.presets",
    "HierarchicalVQVAE": "ndvq.models.hierarchical",
    "NDimVQVAE": "ndvq.compat",
}


class _Registry(Mapping):
    """Read-only ``name -> class`` mapping over :data:`_WHERE` (each class imported when asked)."""

    def __getitem__(self, name: str) -> type:
        if name not in _WHERE:
            raise KeyError(name)
        return getattr(importlib.import_module(_WHERE[name]), name)

    def __iter__(self) -> Iterator[str]:
        return iter(_WHERE)

    def __len__(self) -> int:
        return len(_WHERE)

    def __repr__(self) -> str:
        return f"MODEL_REGISTRY({sorted(_WHERE)})"


#: every model class name -> its class: the one registry (checkpoints, pretrained folders, configs).
MODEL_REGISTRY: Mapping[str, type] = _Registry()


def model_class(name: str) -> type:
    """The model class called ``name``; raises ``CheckpointError`` naming the known ones otherwise.

    Example:
        >>> model_class("VQVAE").__name__
        'VQVAE'
    """
    if name not in MODEL_REGISTRY:
        raise CheckpointError(f"unknown model class {name!r}; known classes: {sorted(MODEL_REGISTRY)}")
    return MODEL_REGISTRY[name]


def to_jsonable(value: Any) -> Any:
    """Tuples -> lists, paths -> strings, recursively (what ``config.json`` can hold)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def accept_legacy_keys(module: nn.Module, renames: dict[str, str]) -> None:
    """Let ``module.load_state_dict`` read state dicts saved with an older layout: every key starting
    with an old prefix (a key of ``renames``) is renamed to the new prefix before loading.

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 2))
        >>> accept_legacy_keys(m, {"lin.": "0."})
        >>> m.load_state_dict({"lin.weight": torch.zeros(2, 2), "lin.bias": torch.zeros(2)})
        <All keys matched successfully>
    """

    def hook(state_dict, prefix, *args) -> None:
        for key in [k for k in state_dict if k.startswith(prefix)]:
            rest = key[len(prefix):]
            for old, new in renames.items():
                if rest.startswith(old):
                    state_dict[prefix + new + rest[len(old):]] = state_dict.pop(key)
                    break

    module._register_load_state_dict_pre_hook(hook)


def _read_folder(directory: str | os.PathLike) -> tuple[Path, dict[str, Any], Path]:
    d = Path(directory)
    expected = f"expected a folder with {CONFIG_NAME} and {WEIGHTS_NAME}, as written by save_pretrained"
    if not d.is_dir():
        raise FileNotFoundError(f"pretrained model folder {str(d)!r} does not exist ({expected})")
    cfg_path, weights = d / CONFIG_NAME, d / WEIGHTS_NAME
    missing = [p.name for p in (cfg_path, weights) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"pretrained model folder {str(d)!r} lacks {', '.join(missing)} ({expected})")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"{str(cfg_path)!r} is not valid JSON: {' '.join(str(e).split())[:200]}") from None
    if not isinstance(config, dict) or "_class_name" not in config:
        raise CheckpointError(f"{str(cfg_path)!r} must be a JSON object with a '_class_name' entry")
    return d, _with_saved_norm(config, weights), weights


def _with_saved_norm(config: dict[str, Any], weights: Path) -> dict[str, Any]:
    """``config`` with ``videogpt.norm="batch"`` where a backbone-options dict saved before the VideoGPT
    backbone's default norm became ``"channel"`` names no norm and its weights hold batch-norm running
    statistics (the model they were trained as); every other config unchanged."""
    options = config.get("videogpt") or {}
    if config.get("backbone") != "videogpt" or not isinstance(options, dict) or "norm" in options:
        return config
    try:
        from safetensors import safe_open

        with safe_open(str(weights), "pt") as fh:
            batch_norm = any(key.endswith(".running_mean") for key in fh.keys())
    except Exception:  # an unreadable file: loading it reports the error in its own words
        return config
    return {**config, "videogpt": {**options, "norm": "batch"}} if batch_norm else config


def read_pretrained_config(directory: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """``(class name, constructor keyword arguments)`` of a ``save_pretrained`` folder, read from its
    ``config.json`` without building anything (``ndvq.run.checkpoint.load_model`` validates them first).

    Raises:
        FileNotFoundError: the folder or one of its two files is missing.
        CheckpointError: ``config.json`` is not a JSON object with a string ``_class_name``.
    """
    d, config, _ = _read_folder(directory)
    name = config.pop("_class_name")
    if not isinstance(name, str):
        raise CheckpointError(f"{str(d / CONFIG_NAME)!r}: '_class_name' should be a string, got {name!r}")
    return name, config


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for a module whose ``self.config`` holds its
    constructor keyword arguments (JSON-able: numbers, strings, lists, dicts, None)."""

    config: dict[str, Any]

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed).

        Args:
            directory: target folder.

        Returns:
            The folder as a ``Path``.
        """
        from safetensors.torch import save_model

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        config = {"_class_name": type(self).__name__, **to_jsonable(dict(self.config))}
        tmp = d / (CONFIG_NAME + ".tmp")
        tmp.write_text(json.dumps(config, indent=2) + "\n")
        os.replace(tmp, d / CONFIG_NAME)
        save_model(self, str(d / WEIGHTS_NAME))  # handles shared tensors; tensors only, no pickle
        return d

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu",
                        strict: bool = True):
        """Rebuild a model saved with :meth:`save_pretrained`, in eval mode.

        Args:
            directory: folder with ``config.json`` and ``model.safetensors``.
            map_location: device the weights are loaded to. Default ``"cpu"``.
            strict: require the weights to match the model's state dict exactly. Default True.

        Raises:
            FileNotFoundError: the folder or one of its two files is missing.
            CheckpointError: the folder holds a different model class, or a malformed config.
        """
        from safetensors.torch import load_model

        d, config, weights = _read_folder(directory)
        name = config.pop("_class_name")
        if name != cls.__name__:
            raise CheckpointError(f"{str(d)!r} holds a {name}, not a {cls.__name__}; use ndvq.load_pretrained "
                                  f"or {name}.from_pretrained")
        _check_size(cls, config, d)
        model = cls(**config)
        device = torch.device(map_location)
        model.to(device)
        try:
            load_model(model, str(weights), strict=strict, device=str(device))
        except Exception as e:  # safetensors' own error type: a file that is not safetensors
            if "safetensors" not in type(e).__module__:
                raise
            raise CheckpointError(f"{str(weights)!r} cannot be loaded into a {name}: "
                                  f"{' '.join(str(e).split())[:200]}") from None
        model.eval()
        return model


def _check_size(cls, config: dict, where) -> None:
    """Build ``cls(**config)`` on the ``meta`` device (no memory) and refuse, in one line, a model whose
    weights and buffers would not fit in the memory available now."""
    try:
        with torch.device("meta"):
            probe = cls(**config)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{str(where)!r}: config.json does not describe a valid {cls.__name__}: "
                              f"{' '.join(str(e).split())[:200]}") from None
    need = sum(t.numel() * t.element_size() for t in (*probe.parameters(), *probe.buffers()))
    available = _available_memory()
    if available is not None and need > available:
        raise CheckpointError(f"{str(where)!r}: config.json describes a {cls.__name__} of {need / 2**30:.1f} GB "
                              f"but only {available / 2**30:.1f} GB of memory is available")


def _available_memory() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (None where unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:"))
    except (OSError, ValueError, StopIteration):
        return None


def load_pretrained(directory: str | os.PathLike, map_location: str | torch.device = "cpu", strict: bool = True):
    """Load any ndvq model saved with ``save_pretrained``; the class is read from ``config.json``.

    Args:
        directory: folder with ``config.json`` and ``model.safetensors``.
        map_location: device the weights are loaded to. Default ``"cpu"``.
        strict: require an exact state-dict match. Default True.

    Returns:
        The model, in eval mode.
    """
    _, config, _ = _read_folder(directory)
    return model_class(config["_class_name"]).from_pretrained(directory, map_location=map_location, strict=strict)
