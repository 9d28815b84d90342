"""Checkpoints: atomic writes, safe loads, RNG state and the keep-N best files.

A checkpoint is a ``torch.save`` dict of tensors and plain Python values (see docs/design.md),
loaded only with ``torch.load(..., weights_only=True)``. Writes go to a temporary file in the same
folder, are flushed to disk and then renamed over the target with ``os.replace``, so a crash mid-write
leaves the previous file intact.

Example:
    >>> import tempfile, torch
    >>> d = tempfile.mkdtemp()
    >>> p = save_checkpoint({"model": {"w": torch.ones(2)}, "step": 3}, f"{d}/last.ckpt")
    >>> load_checkpoint(p)["step"]
    3
"""

from __future__ import annotations

import inspect
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ndvq.config import flatten_keys
from ndvq.errors import CheckpointError, ConfigError
from ndvq.run.rundir import atomic_write, find_checkpoint, run_dir_of

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "update_best",
           "check_same_model", "load_model", "LoadedModel", "model_config_of"]


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (temp file + fsync + ``os.replace``)."""
    path = Path(path)
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``, on CPU) and check its entries' types.

    Raises:
        CheckpointError: not a zip written by ``torch.save``, objects other than tensors and plain values,
            or entries of the wrong type (one line; never advice to unpickle).
    """
    p = find_checkpoint(path)
    if not zipfile.is_zipfile(p):
        raise CheckpointError(f"{str(p)!r} is not an ndvq checkpoint (expected a zip written by torch.save)")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # any reader error -> one line, never the unpickling advice torch appends
        unsafe = "weights_only" in str(e) or "Unsupported global" in str(e)
        why = ("it holds Python objects other than tensors and plain values, which ndvq never loads" if unsafe
               else f"{type(e).__name__}: {' '.join(str(e).split())[:160]}")
        raise CheckpointError(f"cannot read checkpoint {str(p)!r} (expected a file written by ndvq train): "
                              f"{why}") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{str(p)!r} is not an ndvq checkpoint (no 'model' state dict)")
    for key, kind in (("model_class", str), ("model_args", dict), ("config", dict), ("state", dict)):
        if key in state and not isinstance(state[key], kind):
            raise CheckpointError(f"{str(p)!r}: entry {key!r} should be a {kind.__name__}, got "
                                  f"{type(state[key]).__name__}")
    return state


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA RNG states as tensors / plain values."""
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]) + [random.getstate()[0]],
        "python_gauss": random.getstate()[2],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": [int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    py = state["python"]
    random.setstate((py[-1], tuple(py[:-1]), state["python_gauss"]))
    has_gauss, gauss = state["numpy_gauss"]
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def update_best(best: list[list], value: float, step: int, ckpt_dir: Path, keep: int,
                delete: bool = True) -> tuple[list[list], Path | None]:
    """Keep-N bookkeeping of the best checkpoints (lowest ``value``).

    Args:
        best: ``[[value, file name], ...]`` sorted ascending (stored in every checkpoint).
        value: this validation's reconstruction loss.
        step: current step (names the file ``best-step0001000.ckpt``).
        ckpt_dir: folder of the checkpoints.
        keep: how many best files to keep.
        delete: delete the files that dropped out (rank 0 only). Default True.

    Returns:
        The new list and the path to write now (None when this one is not among the best);
        files that dropped out of the list are deleted.
    """
    if not np.isfinite(value):
        return best, None
    name = f"best-step{step:07d}.ckpt"
    best = sorted([b for b in best if b[1] != name] + [[float(value), name]], key=lambda b: b[0])
    dropped, best = best[keep:], best[:keep]
    for _, old in dropped if delete else ():
        (ckpt_dir / old).unlink(missing_ok=True)
    return best, (ckpt_dir / name if any(b[1] == name for b in best) else None)


def check_same_model(ckpt: dict[str, Any], model_class: str, model_args: dict[str, Any], where) -> None:
    """One-line :class:`CheckpointError` unless the checkpoint holds the architecture the config builds.

    Only the architecture is compared (``model_class`` + ``model_args``); loss weights and training
    settings live in other config sections and may change on resume.
    """
    if ckpt.get("model_class") != model_class:
        raise CheckpointError(f"checkpoint in {where} holds a {ckpt.get('model_class')}, the config builds a {model_class}")
    old = flatten_keys(ckpt.get("model_args") or {})
    new = flatten_keys(model_args)
    for k in sorted(set(old) | set(new)):
        if old.get(k) != new.get(k):
            raise CheckpointError(f"checkpoint in {where} was trained with model.{k}={old.get(k)!r} but the config "
                                  f"has {new.get(k)!r}; drop that override to resume")


@dataclass
class LoadedModel:
    """What :func:`load_model` returns.

    Attributes:
        model: the model in eval mode.
        config: the run's :class:`ndvq.config.Config` (None for a pretrained folder).
        run_dir: the run directory (None for a pretrained folder).
        path: the checkpoint file or the pretrained folder.
    """

    model: torch.nn.Module
    config: Any
    run_dir: Path | None
    path: Path


def _preset_args(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """The flat arguments of a preset (VQVAE, HierarchicalVQVAE, KLVAE, NDimVQVAE) as a ``model`` config
    section (the autoencoder's keyword arguments, ``kind`` for the hierarchical one)."""
    from ndvq.models.presets import KL_BACKBONE_ARGS, vq_preset_args
    from ndvq.models.pretrained import model_class

    if name == "NDimVQVAE":
        name, args = "VQVAE", {k: v for k, v in args.items() if k != "input_shape"}
    cls = model_class(name)
    params = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(args) - set(params))
    if unknown:
        raise ConfigError(f"{name} takes no argument(s) {unknown}")
    full = {k: p.default for k, p in params.items() if k != "self" and p.default is not inspect.Parameter.empty}
    full.update(args)
    full["out_channels"] = full.get("out_channels") or full.get("in_channels")
    if name == "KLVAE":
        if full.get("attention_levels") is None and isinstance(full.get("channels"), (list, tuple)):
            full["attention_levels"] = [False] * len(full["channels"])
        return dict(n_dims=full["n_dims"], in_channels=full["in_channels"], out_channels=full["out_channels"],
                    backbone="ldm", bottleneck="gaussian", embedding_dim=full["latent_channels"],
                    ldm={k: full[k] for k in KL_BACKBONE_ARGS})
    section = vq_preset_args(full)
    if name == "HierarchicalVQVAE":
        section.update(kind="hierarchical", top={"downsample": full["top_downsample"],
                                                  "n_codes": full["top_n_codes"],
                                                  "embedding_dim": full["top_embedding_dim"]})
    return section


def model_config_of(name: str, args: Any, where: str):
    """Validate a model's constructor arguments read from a file (a checkpoint's ``model_args``, a pretrained
    ``config.json``) through the config schema, and check their memory, before anything is built.

    Args:
        name: the model class name (``model_class`` / ``_class_name``).
        args: its keyword arguments.
        where: the file, for the messages.

    Returns:
        The :class:`ndvq.config.Config` whose ``model`` section the arguments describe.

    Raises:
        CheckpointError: unknown class, bad value (with the key and the allowed range) or a model that would
            not fit in memory (one line naming ``where``).
    """
    from ndvq.build import check_memory
    from ndvq.config import validate_config
    from ndvq.models.pretrained import model_class

    model_class(name)
    if not isinstance(args, dict):
        raise CheckpointError(f"{where}: the model arguments should be a mapping, got {type(args).__name__}")
    try:
        # an options dict saved as None (a constructor's "its defaults") is the config's default section
        sections = {k: v for k, v in args.items() if not (v is None and k in ("videogpt", "ldm", "quantizer"))}
        if name == "Autoencoder":
            section = sections
        elif name == "HierarchicalAutoencoder":
            section = {**sections, "kind": "hierarchical"}
        else:
            section = _preset_args(name, args)
        cfg = validate_config({"model": section})
        check_memory(cfg, where=where, training=False)
    except (ConfigError, TypeError, KeyError) as e:
        msg = " ".join(str(e).split())[:400]
        raise CheckpointError(msg if msg.startswith(where) else f"{where}: {msg}") from None
    return cfg


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedModel:
    """The one way from a file to a model: a run directory, a ``.ckpt`` file or a ``save_pretrained`` folder.

    The stored model arguments go through the config schema and a memory check before the model is built.

    Args:
        path: run directory, checkpoints folder, checkpoint file, or a folder with ``config.json`` +
            ``model.safetensors``.
        map_location: device of the weights. Default ``"cpu"``.

    Raises:
        CheckpointError: missing, unreadable, oversized or incompatible files (one line).
    """
    from ndvq.models.pretrained import load_pretrained, model_class, read_pretrained_config

    p = Path(path)
    if p.is_dir() and (p / "config.json").is_file() and not (p / "checkpoints").is_dir():
        name, args = read_pretrained_config(p)
        model_config_of(name, args, str(p / "config.json"))
        try:
            return LoadedModel(load_pretrained(p, map_location=map_location).eval(), None, None, p)
        except (RuntimeError, ValueError, TypeError, KeyError) as e:
            raise CheckpointError(f"pretrained folder {str(p)!r} cannot be loaded: {type(e).__name__}: "
                                  f"{' '.join(str(e).split())[:300]}") from None
    from ndvq.config import validate_config

    ckpt_path = find_checkpoint(p)
    ckpt = load_checkpoint(ckpt_path)
    where = f"checkpoint {str(ckpt_path)!r}"
    model_config_of(ckpt.get("model_class"), ckpt.get("model_args"), where)
    try:
        cfg = validate_config(ckpt["config"])
        model = model_class(ckpt["model_class"])(**ckpt["model_args"])
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{where} is incompatible with this ndvq: "
                              f"{type(e).__name__}: {' '.join(str(e).split())[:300]}") from None
    return LoadedModel(model.eval().to(map_location), cfg, run_dir_of(ckpt_path), ckpt_path)
