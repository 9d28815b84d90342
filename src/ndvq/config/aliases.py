"""Old config key names -> new ones (one table), applied to file dicts and to ``key=value`` overrides.

Configs written for earlier versions keep working: every old key in :data:`ALIASES` is moved to its
new place before validation, and each old key used prints ONE note to stderr per load (a plain print,
not a ``DeprecationWarning``: Python hides those outside ``__main__``, and the note is meant for the
person running ``ndvq``)::

    ndvq: config key 'model.n_hiddens' is now 'model.videogpt.n_hiddens'

``--print-config`` and a run's ``config.yaml`` show only the new names.

Two old keys depend on the old ``model.kind`` (they were ignored by the other kinds): in a file,
``model.klvae.latent_channels`` becomes ``model.embedding_dim`` only when ``model.kind`` is
``klvae``, and ``model.quantizer.kind`` becomes ``model.bottleneck`` only when it is not; otherwise
they are dropped (the note says so). As overrides they always apply. An old and a new key set to
different values in one file is a :class:`~ndvq.errors.ConfigError`.

Example:
    >>> rename_keys({"model": {"n_hiddens": 64, "quantizer": {"kind": "lfq"}}}, notes=[])
    {'model': {'videogpt': {'n_hiddens': 64}, 'bottleneck': 'lfq'}}
"""

from __future__ import annotations

import copy
import sys

from ndvq.errors import ConfigError

__all__ = ["ALIASES", "rename_keys", "rename_key", "print_notes", "suggestion_pool"]

_VIDEOGPT = {"n_hiddens": "n_hiddens", "n_res_layers": "num_res_blocks", "downsample": "downsample",
             "n_head": "n_head", "attn_type": "attn_type", "attn_dropout": "attn_dropout", "dropout": "dropout",
             "norm": "norm", "num_groups": "norm_num_groups"}
_LDM = ("channels", "num_res_blocks", "norm_num_groups", "norm_eps", "attention_levels",
        "with_encoder_nonlocal_attn", "with_decoder_nonlocal_attn")

#: old dotted key -> new dotted key
ALIASES: dict[str, str] = {
    **{f"model.{old}": f"model.videogpt.{new}" for old, new in _VIDEOGPT.items()},
    "model.codebook_beta": "model.quantizer.beta",
    "model.ema_decay": "model.quantizer.ema_decay",
    "model.quantizer.kind": "model.bottleneck",
    "model.quantizer.levels": "model.quantizer.fsq_levels",
    "model.klvae.latent_channels": "model.embedding_dim",
    **{f"model.klvae.{k}": f"model.ldm.{k}" for k in _LDM},
    "model.recon_loss": "loss.recon_loss",
    "model.recon_loss_factor": "loss.recon_weight",
}
_OLD_SECTIONS = {"model.klvae": "model.ldm"}
_MISSING = object()


def _note(old: str, new: str, why: str = "") -> str:
    return f"ndvq: config key {old!r} is now {new!r}" + (f" ({why})" if why else "")


def print_notes(notes: list[str]) -> None:
    """Print each distinct note once to stderr, in order."""
    for note in dict.fromkeys(notes):
        print(note, file=sys.stderr)


def rename_key(key: str, notes: list[str] | None = None) -> str:
    """The new name of a dotted override key (unchanged when it is not an old name).

    Args:
        key: e.g. ``"model.n_hiddens"``.
        notes: list the deprecation note is appended to. Default None: print it at once.
    """
    new = ALIASES.get(key)
    if new is None:
        return key
    if notes is None:
        print_notes([_note(key, new)])
    else:
        notes.append(_note(key, new))
    return new


def _pop(data: dict, key: str):
    """Remove and return ``data[key]`` (dotted); a section it leaves empty is removed too."""
    *parents, leaf = key.split(".")
    chain = [data]
    for p in parents:
        chain.append(chain[-1].get(p) if isinstance(chain[-1], dict) else None)
    node = chain[-1]
    if not isinstance(node, dict) or leaf not in node:
        return _MISSING
    value = node.pop(leaf)
    if not node and len(parents) > 1:  # an emptied sub-section (model.klvae, model.quantizer)
        chain[-2].pop(parents[-1])
    return value


def _get(data: dict, key: str):
    node = data
    for p in key.split("."):
        if not isinstance(node, dict) or p not in node:
            return _MISSING
        node = node[p]
    return node


def _put(data: dict, key: str, value) -> None:
    *parents, leaf = key.split(".")
    node = data
    for p in parents:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[leaf] = value


def _ignored_by_kind(old: str, kind) -> str:
    """Why an old key is dropped for this old ``model.kind`` ("" when it applies)."""
    if old == "model.klvae.latent_channels" and kind != "klvae":
        return f"ignored here: model.kind is {kind!r}"
    if old == "model.quantizer.kind" and kind == "klvae":
        return "ignored here: model.kind is 'klvae'"
    return ""


def rename_keys(data: dict, notes: list[str] | None = None) -> dict:
    """A copy of the nested config dict ``data`` with every old key moved to its new name.

    Args:
        data: sections as nested dicts, e.g. a parsed YAML file or an old run's ``config.yaml``.
        notes: list the deprecation notes are appended to. Default None: print them at once.

    Raises:
        ConfigError: an old and a new key both set, to different values.
    """
    out = copy.deepcopy(data)
    pending = []
    kind = _get(out, "model.kind")
    kind = "vqvae" if kind is _MISSING else kind
    for old, new in ALIASES.items():
        value = _pop(out, old)
        if value is _MISSING:
            continue
        why = _ignored_by_kind(old, kind)
        pending.append(_note(old, new, why))
        if why:
            continue
        current = _get(out, new)
        replaces = old == "model.klvae.latent_channels"  # old klvae configs ignored model.embedding_dim
        if current is not _MISSING and current != value and not replaces:
            raise ConfigError(f"config keys {old!r} (old name) and {new!r} are both set, to {value!r} and "
                              f"{current!r}; keep only {new!r}")
        _put(out, new, value)
    if notes is None:
        print_notes(pending)
    else:
        notes.extend(pending)
    return out


def suggestion_pool() -> dict[str, str]:
    """Old keys and old sections -> their new names (for "did you mean" hints)."""
    return {**ALIASES, **_OLD_SECTIONS}
