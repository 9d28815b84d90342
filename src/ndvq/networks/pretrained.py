"""Save and load models as a folder: ``config.json`` (constructor kwargs + ``_class_name``) and
``model.safetensors`` (the state dict). Loading never unpickles anything.

Every ndvq model mixes in :class:`PretrainedMixin` and keeps its constructor keyword arguments
(JSON-able) in ``self.config``. Subclasses register themselves by class name, so
:func:`load_pretrained` can rebuild any of them from the folder alone.

Example:
    >>> from ndvq import VQVAE, load_pretrained
    >>> model = VQVAE(n_dims=1, in_channels=1, n_hiddens=16, downsample=[4], embedding_dim=8, n_codes=16)
    >>> model.save_pretrained("my_model")             # my_model/config.json, my_model/model.safetensors
    >>> same = VQVAE.from_pretrained("my_model")
    >>> also = load_pretrained("my_model")            # dispatches on config.json's _class_name
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["PretrainedMixin", "load_pretrained", "CONFIG_NAME", "WEIGHTS_NAME", "registered_classes"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

_REGISTRY: dict[str, type] = {}


def registered_classes() -> dict[str, type]:
    """Class name -> class of every model that can be loaded with :func:`load_pretrained`."""
    _import_models()
    return dict(_REGISTRY)


def _import_models() -> None:
    """Import the modules that define models so they register themselves."""
    import importlib

    for name in ("ndvq.networks.vqvae", "ndvq.networks.hierarchical", "ndvq.networks.klvae", "ndvq.compat"):
        try:
            importlib.import_module(name)
        except ImportError:  # a model module that is not there (yet) cannot be loaded, the rest can
            pass


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _read_folder(directory: str | os.PathLike) -> tuple[Path, dict[str, Any], Path]:
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(
            f"pretrained model folder {str(d)!r} does not exist (expected a folder with "
            f"{CONFIG_NAME} and {WEIGHTS_NAME}, as written by save_pretrained)"
        )
    cfg_path, weights = d / CONFIG_NAME, d / WEIGHTS_NAME
    missing = [p.name for p in (cfg_path, weights) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"pretrained model folder {str(d)!r} lacks {', '.join(missing)} "
            f"(expected {CONFIG_NAME} and {WEIGHTS_NAME}, as written by save_pretrained)"
        )
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(cfg_path)!r} is not valid JSON: {e}") from None
    if not isinstance(config, dict) or "_class_name" not in config:
        raise ValueError(f"{str(cfg_path)!r} must be a JSON object with a '_class_name' entry")
    return d, config, weights


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for a module whose ``self.config`` holds its
    constructor keyword arguments (JSON-able values: numbers, strings, lists, dicts, None).

    Subclasses are registered by class name for :func:`load_pretrained`.
    """

    config: dict[str, Any]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls

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
        config = {"_class_name": type(self).__name__, **_to_jsonable(dict(self.config))}
        tmp = d / (CONFIG_NAME + ".tmp")
        tmp.write_text(json.dumps(config, indent=2, sort_keys=False) + "\n")
        os.replace(tmp, d / CONFIG_NAME)
        save_model(self, str(d / WEIGHTS_NAME))  # handles shared tensors; tensors only, no pickle
        return d

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu",
                        strict: bool = True):
        """Rebuild a model saved with :meth:`save_pretrained`.

        Args:
            directory: folder with ``config.json`` and ``model.safetensors``.
            map_location: device the weights are loaded to. Default ``"cpu"``.
            strict: require the weights to match the model's state dict exactly. Default True.

        Raises:
            FileNotFoundError: the folder or one of its two files is missing.
            ValueError: the folder holds a different model class, or a malformed config.
        """
        from safetensors.torch import load_model

        d, config, weights = _read_folder(directory)
        name = config.pop("_class_name")
        if name != cls.__name__ and cls is not PretrainedMixin:
            raise ValueError(f"{str(d)!r} holds a {name}, not a {cls.__name__}; use ndvq.load_pretrained "
                             f"or {name}.from_pretrained")
        model = cls(**config)
        device = torch.device(map_location)
        model.to(device)
        load_model(model, str(weights), strict=strict, device=str(device))
        model.eval()
        return model


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
    _import_models()
    name = config["_class_name"]
    if name not in _REGISTRY:
        raise ValueError(f"config.json names model class {name!r}; known classes: {sorted(_REGISTRY)}")
    return _REGISTRY[name].from_pretrained(directory, map_location=map_location, strict=strict)
