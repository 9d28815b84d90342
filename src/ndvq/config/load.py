"""Loading configs: files (YAML/TOML/JSON, medical ``vae_config.json``), ``key=value`` overrides, dumping.

Example:
    >>> cfg = load_config(None, ["model.n_codes=256", "train.learning_rate=3e-4"])
    >>> cfg.model.n_codes, cfg.train.learning_rate
    (256, 0.0003)
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

import tomllib
import yaml

from ndvq.config.aliases import print_notes, rename_key, rename_keys
from ndvq.config.medical import from_medical, is_medical_config
from ndvq.config.schema import Config, field_at
from ndvq.config.validate import unknown_key_error, validate_config
from ndvq.errors import ConfigError

__all__ = [
    "QUICKSTART",
    "load_config",
    "parse_overrides",
    "apply_overrides",
    "config_to_dict",
    "config_to_yaml",
]

# The built-in default run (`ndvq train` with no arguments): a small VQ-VAE on the built-in
# sample images that trains in a few minutes on 2 CPU cores. `configs/default.yaml` holds the
# same values (a test checks they agree).
QUICKSTART: dict = {
    "model": {"n_dims": 2, "in_channels": 3, "embedding_dim": 16, "n_codes": 128,
              "videogpt": {"n_hiddens": 32, "num_res_blocks": 1, "downsample": [4, 4], "n_head": 0,
                           "norm": "channel"}},
    "data": {"kind": "samples", "patch_size": [32, 32], "sample_patches": 2048},
    "train": {"max_steps": 600, "batch_size": 32, "learning_rate": 1e-3, "lr_schedule": "constant",
              "warmup_steps": 50, "val_interval": 200, "val_batches": 4, "ckpt_interval": 200,
              "sample_interval": 200, "log_interval": 20, "usage_window": 50},
}


def load_file(path: str | Path) -> dict:
    """Read a YAML / TOML / JSON file into a dict (format from the extension; YAML otherwise)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config {str(p)!r} is a directory; expected a YAML/TOML/JSON file")
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
        suffix = p.suffix.lower()
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except Exception as e:  # any parser error -> one line
        msg = " ".join(str(e).split())
        raise ConfigError(f"cannot read config {str(p)!r}: {type(e).__name__}: {msg}") from None
    if data is None or data == {}:
        print(f"ndvq: note: config file {str(p)!r} is empty; every key takes its schema default "
              f"(see `ndvq train --print-config`)", file=sys.stderr)
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {str(p)!r} must hold a mapping of sections, got a {type(data).__name__}")
    return data


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _parse_value(text: str):
    """A command-line value: YAML scalar/list syntax (``3e-4`` is a float, ``[4,4]`` a list, ``null`` None)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return float(value)  # PyYAML reads "3e-4" as a string (YAML 1.1); users mean a float
    return value


def parse_overrides(items: list[str] | tuple[str, ...]) -> list[tuple[str, object]]:
    """``["train.learning_rate=3e-4", "model.n_codes=1024"]`` -> ``[(key, value), ...]``.

    Values are parsed with ``yaml.safe_load``. A missing ``=`` is a :class:`ConfigError`.
    """
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.learning_rate=3e-4)")
        out.append((key, _parse_value(value)))
    return out


def apply_overrides(data: dict, overrides: list[tuple[str, object]]) -> dict:
    """Set dotted ``key=value`` pairs in a nested dict (a copy, its old key names renamed).

    Old key names (in ``data`` and in ``overrides``) are renamed with one note each on stderr;
    an unknown key raises :class:`ConfigError` (with the closest valid key).
    """
    notes: list[str] = []
    data = rename_keys(copy.deepcopy(data), notes)
    for key, value in overrides:
        key = rename_key(key, notes)
        parts = key.split(".")
        if field_at(parts)[1] is None:
            raise unknown_key_error(key)
        node = data
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    print_notes(notes)
    return data


def _from_medical(data: dict, overrides=()) -> dict:
    """A medical ``vae_config.json`` dict -> ndvq's config dict with ``overrides`` applied; the paths are
    checked after the overrides (``data.root=...`` replaces a missing ``data_base_dir``)."""
    from ndvq.config.medical import check_medical_paths

    cfg, extras = from_medical(dict(data), check_paths=False)
    out = apply_overrides(config_to_dict(cfg), parse_overrides(list(overrides)))
    check_medical_paths(validate_config(out), extras.source.get("data_source"))
    if extras.resume is not None:
        print(f"ndvq: medical config: resume_ckpt is true; continuing from checkpoint_dir={extras.resume}",
              file=sys.stderr)
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                base: dict | Config | None = None, config_format: str = "auto") -> Config:
    """Load, merge and validate a configuration.

    Args:
        path: YAML (``.yaml``/``.yml``), TOML (``.toml``) or JSON (``.json``) file; a medical
            ``vae_config.json`` (keys ``autoencoder_def`` + ``autoencoder_train``) is detected and
            converted by :func:`ndvq.config.medical.from_medical`. Default None: use ``base``.
        overrides: ``key=value`` strings applied on top (values parsed with ``yaml.safe_load``).
        base: the starting point when ``path`` is None (a dict or Config). Default None:
            :data:`QUICKSTART` (the built-in default run).
        config_format: ``"auto"`` (default: a medical file is recognised by its keys), ``"ndvq"``
            (always read as ndvq's own schema) or ``"medical"`` (always convert as a medical
            ``vae_config.json``; a file without its sections is an error naming them).

    Returns:
        The validated :class:`Config`. Old key names are accepted with a note on stderr
        (:mod:`ndvq.config.aliases`).

    Raises:
        ConfigError: unreadable file, unknown key (with the closest valid key) or bad value
            (with the allowed range); the message is one line.

    Example:
        >>> load_config(None, ["model.videogpt.n_hiddens=64"]).model.videogpt.n_hiddens
        64
    """
    if config_format not in ("auto", "ndvq", "medical"):
        raise ConfigError(f"config_format must be one of 'auto', 'ndvq', 'medical', got {config_format!r}")
    if path is not None:
        data = load_file(path)
        medical = is_medical_config(data)
        if config_format == "medical" and not medical:
            raise ConfigError(f"{str(path)!r} is not a medical vae_config.json: expected top-level keys "
                              f"'autoencoder_def' and 'autoencoder_train', got {sorted(data)}")
        if config_format == "medical" or (config_format == "auto" and medical):
            data = _from_medical(data, overrides)
    elif isinstance(base, Config):
        data = config_to_dict(base)
    else:
        data = QUICKSTART if base is None else base
    data = apply_overrides(data, parse_overrides(list(overrides)))
    return validate_config(data)


def config_to_dict(cfg: Config) -> dict:
    """The config as plain JSON-able Python values (paths as strings, tuples as lists)."""
    return cfg.model_dump(mode="json")


def config_to_yaml(cfg: Config) -> str:
    """The fully resolved config as YAML text (the run directory's ``config.yaml``)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)


def flatten_keys(d: dict, prefix: str = "") -> dict:
    """A nested config dict as dotted keys: ``{"model": {"videogpt": {"n_hiddens": 8}}}`` ->
    ``{"model.videogpt.n_hiddens": 8}`` (lists stay values).

    Example:
        >>> flatten_keys({"a": {"b": 1, "c": [2]}, "d": None})
        {'a.b': 1, 'a.c': [2], 'd': None}
    """
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten_keys(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
