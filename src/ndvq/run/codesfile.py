"""The codes file of ``ndvq encode`` (``.npz``): the model fingerprint it stores and its validation by ``decode``.

Every failure is one :class:`~ndvq.errors.CodesError` line naming the file and the key; nothing is
decoded from a file that does not fit the model (shapes, counts, index ranges, fingerprint).

Example:
    >>> import torch
    >>> from ndvq import VQVAE
    >>> m = VQVAE(n_dims=1, in_channels=1, n_hiddens=8, downsample=[4], embedding_dim=4, n_codes=16)
    >>> len(codes_fingerprint(m))
    16
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from pathlib import Path

import numpy as np
import torch

from ndvq.errors import CodesError

__all__ = ["codes_fingerprint", "check_codes_file", "REQUIRED_KEYS"]

REQUIRED_KEYS = ("n_levels", "names", "modality", "model_class", "input_shapes", "latent_shapes", "infos")
"""Keys every codes file holds (besides the codes: ``codes``/``latents``, per level or per item)."""


def codes_fingerprint(model: torch.nn.Module) -> str:
    """16 hex digits of a SHA-256 over the model's class, arguments and weights: codes decode correctly
    only with the weights that encoded them."""
    h = hashlib.sha256(type(model).__name__.encode())
    h.update(repr(sorted((getattr(model, "config", None) or {}).items())).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _get(z, key: str, where: str) -> np.ndarray:
    try:
        return z[key]
    except KeyError:
        raise CodesError(f"{where} lacks the key {key!r}; it is not an ndvq codes file (written by ndvq encode)") from None
    except ValueError as e:  # an object (pickled) array: allow_pickle=False refuses it
        raise CodesError(f"{where}: key {key!r} holds Python objects (refused; ndvq codes files hold plain "
                         f"arrays): {' '.join(str(e).split())[:80]}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise CodesError(f"{where}: key {key!r} is unreadable: {type(e).__name__}: {e}") from None


def _open(codes: Path):
    where = f"codes file {str(codes)!r}"
    if not codes.is_file():
        raise CodesError(f"{where} does not exist" if not codes.exists() else f"{where} is not a file")
    if not zipfile.is_zipfile(codes):
        raise CodesError(f"{where} is not an ndvq codes file (expected an .npz written by ndvq encode)")
    try:
        return np.load(codes, allow_pickle=False), where
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise CodesError(f"{where} is not an ndvq codes file: {type(e).__name__}: {e}") from None


def _int_table(z, key: str, where: str, n: int, width: int) -> np.ndarray:
    a = _get(z, key, where)
    if a.dtype.kind not in "iu" or a.shape != (n, width):
        raise CodesError(f"{where}: {key!r} should be integers of shape ({n}, {width}) for {n} names, got "
                         f"{a.dtype} {tuple(a.shape)}")
    if n and a.min() < 1:
        raise CodesError(f"{where}: {key!r} holds a size < 1 ({int(a.min())})")
    return a


def _level_array(z, key: str, i: int, where: str) -> tuple[str, np.ndarray]:
    """Item ``i`` of one level: row ``i`` of the stacked ``key`` or the per-item ``key_itemNNNNNN``."""
    if key in z.files:
        a = _get(z, key, where)
        return key, a[i] if i < len(a) else None
    name = f"{key}_item{i:06d}"
    return name, _get(z, name, where)


def _check_indices(a: np.ndarray, sizes: list[int], key: str, where: str) -> None:
    """Integer codes, column ``c`` (the trailing index axis, or the only one) inside ``0..sizes[c]-1``."""
    if a.dtype.kind not in "iu":
        raise CodesError(f"{where}: {key!r} should hold integer codes, got {a.dtype}")
    cols = a.reshape(-1, len(sizes))  # [*L(, G)] -> [positions, G]
    for c, k in enumerate(sizes):
        if not len(cols):
            return
        lo, hi = int(cols[:, c].min()), int(cols[:, c].max())
        if lo < 0 or hi >= k:
            raise CodesError(f"{where}: {key!r} holds code {lo if lo < 0 else hi} outside 0..{k - 1} "
                             f"(codebook size {k})")


def _multiple(model) -> tuple[int, ...]:
    return tuple(getattr(model, "input_multiple", None) or model.downsample)


def _expected(model, spatial: list[int], where: str = "", row: int = 0) -> list[tuple[int, ...]]:
    """Per-level item shapes the model gives for an item of this (unpadded) spatial shape."""
    padded = tuple(math.ceil(s / d) * d for s, d in zip(spatial, _multiple(model)))
    try:
        if model.codebook_sizes:
            return [tuple(s) for s in model.code_shapes(padded)]
        return [(model.embedding_dim, *model.latent_shape(padded))]
    except ValueError as e:  # DataError: a shape the model cannot take
        raise CodesError(f"{where}: 'input_shapes' row {row} {spatial} does not fit the model: {e}") from None


def check_codes_file(codes: str | Path, model: torch.nn.Module) -> None:
    """Validate an ``ndvq encode`` file against ``model`` before anything is decoded.

    Checks: a zip of plain arrays with every key of :data:`REQUIRED_KEYS`; the model class and the
    fingerprint (when stored) of ``model``; equal counts of names, infos, input and latent shapes and
    codes; ``input_shapes`` positive with ``1 + n_dims`` entries; ``latent_shapes`` and every code array
    equal to the model's shapes for that input; integer codes within their codebook.

    Raises:
        CodesError: one line naming the file and the key.
    """
    z, where = _open(Path(codes))
    cls = str(_get(z, "model_class", where))
    if cls != type(model).__name__:
        raise CodesError(f"{where} was encoded by a {cls}, the checkpoint holds a {type(model).__name__}")
    if "fingerprint" in z.files and str(_get(z, "fingerprint", where)) != codes_fingerprint(model):
        raise CodesError(f"{where}: key 'fingerprint' {str(z['fingerprint'])} does not match this model's "
                         f"{codes_fingerprint(model)}: it was encoded with other weights (another run or "
                         f"checkpoint); decode it with the checkpoint that encoded it")
    names, infos = _get(z, "names", where), _get(z, "infos", where)
    n = len(names) if names.ndim == 1 else -1
    if n < 0 or infos.shape != (n,):
        raise CodesError(f"{where}: 'names' and 'infos' should be 1-D of equal length, got {names.shape} and {infos.shape}")
    n_levels = _get(z, "n_levels", where)
    levels = len(_expected(model, list(_multiple(model)), where))
    if n_levels.shape != () or n_levels.dtype.kind not in "iu" or int(n_levels) != levels:
        raise CodesError(f"{where}: 'n_levels' is {n_levels.tolist()!r}, this model has {levels} code level(s)")
    inputs = _int_table(z, "input_shapes", where, n, 1 + model.n_dims)
    latents = _int_table(z, "latent_shapes", where, n, model.n_dims)
    key = "codes" if model.codebook_sizes else "latents"
    level_keys = [key] if levels == 1 else [f"{key}_{j}" for j in range(levels)]
    for k in level_keys:
        if k in z.files and len(_get(z, k, where)) != n:
            raise CodesError(f"{where}: {k!r} holds {len(z[k])} item(s) but 'names' has {n}")
    for i in range(n):
        shapes = _expected(model, [int(s) for s in inputs[i, 1:]], where, i)
        lat = tuple(shapes[-1][1:] if not model.codebook_sizes else shapes[-1][:model.n_dims])
        if tuple(int(s) for s in latents[i]) != lat:
            raise CodesError(f"{where}: 'latent_shapes' row {i} is {latents[i].tolist()}, the model's latent shape "
                             f"for input_shapes {inputs[i].tolist()} is {list(lat)}")
        _check_item(z, model, level_keys, shapes, i, where)


def _check_item(z, model, level_keys: list[str], shapes: list[tuple], i: int, where: str) -> None:
    sizes = iter(model.codebook_sizes)
    for k, want in zip(level_keys, shapes):
        name, a = _level_array(z, k, i, where)
        if a is None or tuple(a.shape) != tuple(want):
            raise CodesError(f"{where}: {name!r} item {i} has shape {None if a is None else list(a.shape)}, "
                             f"expected {list(want)} for its input shape")
        if model.codebook_sizes:
            columns = want[-1] if len(want) == model.n_dims + 1 else 1
            _check_indices(a, [next(sizes) for _ in range(columns)], name, where)
        elif a.dtype.kind != "f" or not np.isfinite(a).all():
            raise CodesError(f"{where}: {name!r} item {i} should hold finite float latents")
