"""A nested dict -> :class:`~ndvq.config.schema.Config`, with one-line errors that name the key.

Unknown keys get the closest valid key (old key names included: ``model.n_res_layer`` suggests
``model.videogpt.num_res_blocks``); bad values get the key, the value and the allowed range.

Example:
    >>> validate_config({"train": {"learning_rate": 5}})
    Traceback (most recent call last):
    ...
    ndvq.errors.ConfigError: invalid config: bad value for train.learning_rate=5: Input should be less than or equal to 1; allowed: 0 < value <= 1 (float)
"""

from __future__ import annotations

import difflib

from pydantic import ValidationError

from ndvq.config.aliases import rename_keys, suggestion_pool
from ndvq.config.schema import Config, all_keys, allowed_text, field_at
from ndvq.errors import ConfigError

__all__ = ["validate_config", "unknown_key_error", "check_keys", "is_key"]


def is_key(key: str) -> bool:
    """True when the dotted ``key`` is a field (or section) of the schema."""
    return field_at(key.split("."))[1] is not None


def _suggest(key: str) -> str | None:
    """The valid key a user most likely meant by the unknown ``key`` (old names map to new ones)."""
    pool = {k: k for k in all_keys()}
    pool.update(suggestion_pool())
    leaf = key.split(".")[-1]
    by_leaf = {}
    for name, target in reversed(pool.items()):
        by_leaf[name.split(".")[-1]] = target
    if leaf in by_leaf:  # right name, wrong section
        return by_leaf[leaf]
    match = difflib.get_close_matches(key, list(pool), n=1, cutoff=0.6)
    if match:
        return pool[match[0]]
    leaf_match = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)  # a close leaf in any section
    return by_leaf[leaf_match[0]] if leaf_match else None


def unknown_key_error(key: str) -> ConfigError:
    """``unknown config key 'train.n_codes'; did you mean 'model.n_codes'?`` as a :class:`ConfigError`."""
    match = _suggest(key)
    hint = f"; did you mean {match!r}?" if match else "; see `ndvq train --print-config` for all keys"
    return ConfigError(f"unknown config key {key!r}{hint}")


def check_keys(data: dict, path: list[str] | None = None) -> None:
    """Raise a :class:`ConfigError` naming the first unknown key (with the closest valid one)."""
    path = path or []
    section = field_at(path)[0] if path else Config
    if section is None:
        return
    for k, v in data.items():
        if k not in section.model_fields:
            raise unknown_key_error(".".join([*path, str(k)]))
        if isinstance(v, dict):
            check_keys(v, [*path, k])


def _format_validation_error(err: ValidationError) -> str:
    """A pydantic ``ValidationError`` -> one line naming the key, the value and the allowed range."""
    parts = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
        key = ".".join(str(p) for p in loc) or "config"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            return str(unknown_key_error(key))
        if e["type"] in ("value_error", "assertion_error"):
            parts.append(f"{key}: {msg}")
            continue
        allowed = allowed_text(loc)
        got = e.get("input")
        parts.append(f"bad value for {key}={got!r}: {msg}" + (f"; {allowed}" if allowed else ""))
    return "invalid config: " + " | ".join(parts)


def validate_config(data: dict) -> Config:
    """A nested dict -> :class:`Config`; old key names are renamed (with a note on stderr), unknown
    keys and bad values raise a one-line :class:`ConfigError`.

    Example:
        >>> validate_config({"model": {"n_codes": 64}}).model.n_codes
        64
    """
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping of sections, got {type(data).__name__}")
    data = rename_keys(data)
    check_keys(data)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e)) from None
