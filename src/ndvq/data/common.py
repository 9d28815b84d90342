"""Shared pieces of the datasets: file discovery, splits, crops/padding and the base class.

Every dataset in :mod:`ndvq.data` derives from :class:`FileDataset`, which gives it

* ``dataset[i] -> {"data": FloatTensor[C, *S], "index": i, "valid": LongTensor[n_dims]}``: ``valid``
  is the real extent of the item per spatial axis; everything past it (padding, always at the end of
  each axis) is not data. Series items add ``"observed"`` (``BoolTensor[C, *S]``, False at missing
  values). :func:`valid_mask` turns a batch's ``valid`` (and ``observed``) into a mask;
* ``whole=True`` (eval / encode / decode): one item per file at its own size (audio / series / video
  whole files, images / volumes whole), padded at the end to ``pad_multiple``;
* a file that fails while an item is
  loaded is replaced by the next loadable item with a warning naming the file (never a crash
  mid-epoch) and is listed in ``dataset.skipped``;
* ``summary()`` (files found, items, item shape, value range), ``item_info(i)``, ``data_range``,
  ``modality``, ``n_dims``, ``channels``.

Folder layouts understood by :func:`split_files` (image, video, audio, series, volume):

* ``root/train/**`` + ``root/test/**`` (or ``root/val/**``): the split folders are used as they are;
* ``root/**`` plus ``val_dir``: all of ``root`` is the train split, ``val_dir`` the val split;
* ``root/**`` alone: the sorted files are shuffled with ``split_seed`` and the first
  ``train_split`` fraction is the train split, the rest the val split.

``split="all"`` gives every file (train + val).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from ndvq.errors import DataError

__all__ = [
    "FileDataset",
    "find_files",
    "split_files",
    "check_split",
    "warn_skip",
    "cache_dir",
    "center_crop",
    "random_crop",
    "pad_to",
    "pad_to_multiple",
    "crop_box",
    "format_range",
    "resize",
    "fit_and_crop",
    "augment_nd",
    "valid_mask",
    "code_mask",
    "split_positions",
    "warn_data",
]

log = logging.getLogger("ndvq.data")

SPLITS = ("train", "val", "all")
SINGLE_FILE = "one file"  # layout text of a folder with a single file (split by position, see split_positions)
NO_VALIDATION = "no validation"  # layout text of train_split >= 1
_VAL_NAMES = ("test", "val", "valid", "validation")


def check_split(split: str) -> str:
    """``split`` must be ``"train" | "val" | "all"``."""
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def split_positions(n: int, split: str, train_split: float) -> tuple[int, int]:
    """``[lo, hi)`` of ``n`` positions (time steps, frames, slices) given to ``split`` of a single file:
    train = the first ``train_split`` share, val = the rest (at least one position each when ``n >= 2``)."""
    cut = min(max(round(n * float(train_split)), 1), max(n - 1, 1))
    return {"train": (0, cut), "val": (cut, n), "all": (0, n)}[split]


def valid_mask(batch, shape: Sequence[int] | None = None) -> torch.Tensor | None:
    """``[B, 1, *S]`` bool mask of the real (unpadded) elements of a batch; ``[B, C, *S]`` when the batch
    marks missing values (``batch["observed"]``, series: False where the source had NaN).

    Args:
        batch: a collated batch dict (``batch["valid"]`` ``[B, n_dims]``, ``batch["data"]``
            ``[B, C, *S]``, optionally ``batch["observed"]`` ``[B, C, *S]``), or the ``valid`` tensor
            itself (then ``shape`` is needed).
        shape: spatial shape ``S``. Default None: ``batch["data"].shape[2:]``.

    Returns None when the batch carries no ``valid`` (every element is real).

    Example:
        >>> valid_mask(torch.tensor([[3]]), [5]).int().tolist()
        [[[1, 1, 1, 0, 0]]]
    """
    valid = batch.get("valid") if isinstance(batch, dict) else batch
    if valid is None:
        return None
    observed = batch.get("observed") if isinstance(batch, dict) else None
    shape = list(shape if shape is not None else batch["data"].shape[2:])
    valid = torch.as_tensor(valid).reshape(-1, len(shape))
    mask = torch.ones(valid.shape[0], 1, *shape, dtype=torch.bool, device=valid.device)
    for a, s in enumerate(shape):
        view = [1] * (len(shape) + 2)
        view[2 + a] = s
        idx = torch.arange(s, device=valid.device).view(view)  # [1, 1, .., s, .., 1]
        mask = mask & (idx < valid[:, a].view(-1, *([1] * (len(shape) + 1))))
    return mask if observed is None else mask & observed.to(device=mask.device, dtype=torch.bool)  # [B, C, *S]


def code_mask(valid, downsample: Sequence[int], latent_shape: Sequence[int]) -> torch.Tensor:
    """``[B, *L]`` bool: code positions not wholly inside padding (a partly covered position counts).

    Args:
        valid: ``[B, n_dims]`` real extent per axis (the items' ``"valid"``).
        downsample: the model's total downsampling per axis.
        latent_shape: the code grid's spatial shape ``L``.
    """
    valid = torch.as_tensor(valid)
    covered = torch.stack([-(-valid[:, a] // int(d)) for a, d in enumerate(downsample)], dim=1)  # ceil
    return valid_mask(covered, latent_shape)[:, 0]


def cache_dir() -> Path:
    """The ndvq cache folder: ``$NDVQ_CACHE`` or ``~/.cache/ndvq`` (created).

    When that folder cannot be created or written (an unwritable or missing ``HOME``), a per-user folder
    in the temporary directory is used instead, with a warning; ``$NDVQ_CACHE`` that cannot be created
    is a :class:`DataError`.
    """
    if os.environ.get("NDVQ_CACHE"):
        root = Path(os.environ["NDVQ_CACHE"]).expanduser()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"NDVQ_CACHE={str(root)!r} cannot be created: {e.strerror or e}") from None
        return root
    try:
        root = Path.home().expanduser() / ".cache" / "ndvq"
        root.mkdir(parents=True, exist_ok=True)
        if os.access(root, os.W_OK):
            return root
        reason = f"{root} is not writable"
    except (OSError, RuntimeError) as e:  # RuntimeError: no home directory at all
        reason = f"{getattr(e, 'strerror', None) or e}"
    import tempfile

    fallback = Path(tempfile.gettempdir()) / f"ndvq-cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    fallback.mkdir(mode=0o700, parents=True, exist_ok=True)
    msg = f"ndvq: warning: the cache under HOME is not usable ({reason}); using {fallback} (set NDVQ_CACHE)"
    log.warning(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=2)
    return fallback


#: Above this mean share of padding per item the start summary warns, and a window / patch size the user
#: did not set is shrunk to the dataset's ``suggested_fix`` (``ndvq.build.fit_items``).
PADDING_WARN_SHARE = 0.25


def window_padding(lengths: Sequence[int], window: int, hop: int) -> float:
    """Mean share of padding per window over files of ``lengths`` samples cut into ``window``-sample
    windows every ``hop`` samples (a file shorter than the window is one zero-padded window; a longer
    file's windows are whole, its tail shorter than a hop is left out)."""
    shares = [1 - min(n, window) / window for n in lengths for _ in window_starts(0, n, window, hop)]
    return sum(shares) / max(len(shares), 1)


def window_starts(lo: int, hi: int, window: int, hop: int) -> range:
    """First samples of the ``window``-sample windows cut every ``hop`` samples from samples ``lo:hi`` (one
    window when the span is shorter than a window; a tail shorter than a hop is left out)."""
    return range(lo, lo + max(hi - lo - window, 0) + 1, hop)


def fitting_window(lengths: Sequence[int], window: int, hop: int, limit: float = PADDING_WARN_SHARE) -> int:
    """The largest window (``window`` or a power of two below it, at least 16 samples) whose mean padding
    (:func:`window_padding`, the hop shrunk with the window) is within ``limit``; 16 when none is."""
    sizes = [window] + [2 ** p for p in range(int(math.log2(max(window - 1, 16))), 3, -1) if 2 ** p < window]
    return next((w for w in sizes if window_padding(lengths, w, min(hop, w)) <= limit), sizes[-1])


def patch_padding(shapes: Sequence[Sequence[int]], patch: Sequence[int]) -> float:
    """Mean share of padding in a ``patch``-sized crop of items of ``shapes`` (an item smaller than the patch
    along an axis is padded along it)."""
    kept = [math.prod(min(s, p) / p for s, p in zip(shape, patch)) for shape in shapes]
    return 1 - sum(kept) / max(len(kept), 1)


def fitting_patch(shapes: Sequence[Sequence[int]], patch: Sequence[int], limit: float = PADDING_WARN_SHARE,
                  floor: int = 8) -> list[int]:
    """``patch`` shrunk until its mean padding over items of ``shapes`` (:func:`patch_padding`) is within
    ``limit``: one axis at a time, the one whose items fill it least, to the next power of two below (never
    below ``floor``; the smallest reached when no size is within the limit). A few small outliers cost a
    little padding instead of shrinking every patch to the smallest item."""
    fit = [int(p) for p in patch]
    while patch_padding(shapes, fit) > limit:
        axes = [a for a in range(len(fit)) if fit[a] > floor]
        if not axes:
            break
        a = min(axes, key=lambda a: sum(min(s[a], fit[a]) for s in shapes) / fit[a])
        fit[a] = max(floor, 2 ** int(math.log2(fit[a] - 1)))
    return fit


def majority(votes: Counter) -> tuple[int, bool]:
    """``(value, tie)``: the most common value of ``votes``, a tie going to the highest (nothing is lost: the
    higher rate, the more channels); ``(0, False)`` for no votes (an empty val split)."""
    if not votes:
        return 0, False
    best = max(votes, key=lambda v: (votes[v], v))
    return best, sum(n == votes[best] for n in votes.values()) > 1


def warn_skip(path, err: BaseException | str, what: str = "file") -> None:
    """Warn (``warnings.warn`` and the ``ndvq.data`` logger) that ``path`` is skipped."""
    msg = f"ndvq.data: skipping unreadable {what} {str(path)!r}: {type(err).__name__ + ': ' if isinstance(err, BaseException) else ''}{err}"
    log.warning(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=3)


@contextlib.contextmanager
def quiet_data(naming: str | None = None):
    """No ``ndvq.data`` log lines or Python warnings from the datasets built inside (``naming``: only those
    whose message contains it, e.g. a temporary folder the caller names by other paths). Default None: all."""
    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return naming is not None and naming not in record.getMessage()

    drop = _Drop()
    log.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*" + re.escape(naming) if naming is not None else "")
            yield
    finally:
        log.removeFilter(drop)


def warn_data(msg: str) -> None:
    """A data warning (``warnings.warn`` and the ``ndvq.data`` logger), prefixed ``ndvq.data:``."""
    msg = f"ndvq.data: {msg}"
    log.warning(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=3)


def _norm_exts(extensions: Sequence[str]) -> tuple[str, ...]:
    return tuple("." + e.lower().lstrip(".") for e in extensions)


def _has_ext(p: Path, exts: tuple[str, ...]) -> bool:
    name = p.name.lower()
    return any(name.endswith(e) for e in exts)


def find_files(root: str | Path, extensions: Sequence[str], subfolders: Sequence[str] | None = None) -> list[Path]:
    """Sorted files under ``root`` (recursively) whose name ends with one of ``extensions``; ``[root]`` when
    ``root`` is such a file.

    Args:
        root: the folder searched, or one file; a missing folder is a ``FileNotFoundError``.
        extensions: e.g. ``["png", ".jpg"]`` (case-insensitive; ``"nii.gz"`` works).
        subfolders: only these sub-folders of ``root`` (each must exist). Default None: all of ``root``.

    Hidden files and folders (``.name``) are ignored.
    """
    root = Path(root).expanduser()
    exts = _norm_exts(extensions)
    if root.is_file():  # one file: itself (split by position like a folder holding only it)
        if subfolders:
            raise DataError(f"data.subfolders={list(subfolders)} needs a folder; data root {str(root)!r} is a file")
        if not _has_ext(root, exts):
            raise DataError(f"data root {str(root)!r} is a file without one of the extensions {list(exts)}")
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {str(root)!r} does not exist")
    bases = [root]
    if subfolders:
        bases = [root / s for s in subfolders]
        missing = [s for s, b in zip(subfolders, bases) if not b.is_dir()]
        if missing:
            present = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise FileNotFoundError(f"subfolder(s) {missing} not found in {str(root)!r}; found {present}")
    out: dict[str, Path] = {}  # resolved path -> first path seen: each real file once
    for base in bases:
        seen_dirs: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen_dirs:  # a symlink back into a folder already walked (a loop or a duplicate)
                warn_data(f"symlinked folder {dirpath!r} leads to {real!r}, already indexed: not followed again")
                dirnames[:] = []
                continue
            seen_dirs.add(real)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                if not f.startswith(".") and _has_ext(Path(f), exts):
                    out.setdefault(os.path.realpath(Path(dirpath) / f), Path(dirpath) / f)
    return sorted(out.values())


def split_files(root: str | Path, split: str, extensions: Sequence[str], val_dir: str | Path | None = None,
                train_split: float = 0.9, split_seed: int = 0,
                subfolders: Sequence[str] | None = None) -> tuple[list[Path], str]:
    """The files of ``split`` and a short description of the layout used (see the module docstring).

    Raises ``FileNotFoundError`` for a missing folder and ``ValueError`` when no file with one of
    ``extensions`` is found (naming the folder and the extensions).
    """
    check_split(split)
    if root is None:
        raise DataError("data.root is not set: pass the data folder (e.g. data.root=path/to/files)")
    root = Path(root).expanduser()
    if not root.is_dir():
        find_files(root, extensions)  # raises the missing-folder error
    exts = list(_norm_exts(extensions))

    def found(folder, subs=subfolders):
        files = find_files(folder, exts, subs)
        if not files:
            where = f"{str(folder)!r}" + (f" (subfolders {list(subs)})" if subs else "")
            raise DataError(f"no files with extensions {exts} found in {where}")
        return files

    train_dir = root / "train"
    val_named = next((root / n for n in _VAL_NAMES if (root / n).is_dir()), None)
    if train_dir.is_dir() and val_named is not None and val_dir is None:
        layout = f"{train_dir.name}/ + {val_named.name}/ folders"
        train = found(train_dir) if split != "val" else []
        val = found(val_named) if split != "train" else []
    elif val_dir is not None:
        layout = f"root + val_dir {str(val_dir)!r}"
        train = found(root)  # (the val split too: files under both are dropped from val below)
        val = found(Path(val_dir).expanduser(), None) if split != "train" else []
    else:
        files = found(root)
        order = list(range(len(files)))
        random.Random(split_seed).shuffle(order)
        if len(files) == 1 and train_split < 1:
            layout = f"{SINGLE_FILE}: split by position (val = the last {1 - train_split:.0%})"
            return files, layout
        n_train = len(files) if train_split >= 1 else min(max(1, round(train_split * len(files))), len(files) - 1)
        layout = f"one folder split {n_train}/{len(files) - n_train} (train_split={train_split}, split_seed={split_seed})"
        if train_split >= 1:
            layout = f"all {len(files)} file(s) for training, {NO_VALIDATION} (train_split={train_split})"
        train = sorted(files[j] for j in order[:n_train])
        val = sorted(files[j] for j in order[n_train:])
    real_train = {os.path.realpath(f) for f in train}
    shared = [f for f in val if os.path.realpath(f) in real_train]
    if shared:  # never the same file in both splits (e.g. val_dir inside root, or a symlink)
        warn_data(f"{len(shared)} val file(s) are also in the train split and are used for training only: "
                  f"{[str(f) for f in shared[:3]]}")
        val = [f for f in val if os.path.realpath(f) not in real_train]
    files = {"train": train, "val": val, "all": train + val}[split]
    return files, layout


def crop_box(size: Sequence[int], target: Sequence[int], random_: bool,
             generator: torch.Generator | None = None) -> tuple[int, ...]:
    """Start offsets of a ``target``-sized window inside ``size`` (0 where ``target >= size``)."""
    starts = []
    for s, t in zip(size, target):
        room = max(int(s) - int(t), 0)
        if random_ and room:
            starts.append(int(torch.randint(0, room + 1, (1,), generator=generator)))
        else:
            starts.append(room // 2)
    return tuple(starts)


def pad_to(x: torch.Tensor, target: Sequence[int], value: float | None = None, mode: str = "constant") -> torch.Tensor:
    """Pad the trailing ``len(target)`` axes of ``x`` at the end up to ``target`` (never crops).

    Args:
        x: ``[..., *S]``; with ``mode="replicate"`` exactly ``[C, *S]`` with ``len(S) == len(target)``.
        target: the size of each trailing axis.
        value: the fill of ``mode="constant"``. Default None: the minimum of ``x`` (the background of
            normalised data).
        mode: ``"constant"`` or ``"replicate"`` (each padded element repeats the last real one along its
            axis: the continuation a network reconstructs best next to the real edge). Default ``"constant"``.
    """
    n = len(target)
    extra = [max(int(t) - int(s), 0) for s, t in zip(x.shape[-n:], target)]
    if not any(extra):
        return x
    pads = []
    for e in reversed(extra):  # F.pad wants the last axis first: (left, right) pairs
        pads += [0, e]
    if mode == "replicate":
        if x.ndim != n + 1:
            raise ValueError(f"replicate padding needs [C, *S] with {n} spatial axes, got {list(x.shape)}")
        return F.pad(x[None], pads, mode="replicate")[0]  # [C, *S] -> [1, C, *S] (F.pad's batch) -> [C, *S']
    if mode != "constant":
        raise ValueError(f"mode must be 'constant' or 'replicate', got {mode!r}")
    fill = float(x.min()) if value is None and x.numel() else (value or 0.0)
    return F.pad(x, pads, value=fill)


def pad_to_multiple(x: torch.Tensor, multiple: Sequence[int] | int | None, value: float | None = None,
                    mode: str = "constant") -> torch.Tensor:
    """Pad the spatial axes of ``x [C, *S]`` at the end so each is a multiple of ``multiple`` (``value`` and
    ``mode`` as in :func:`pad_to`)."""
    if multiple is None:
        return x
    spatial = x.shape[1:]
    mult = [multiple] * len(spatial) if isinstance(multiple, int) else list(multiple)
    if len(mult) != len(spatial):
        raise DataError(f"pad_multiple needs {len(spatial)} entries for items of shape {list(x.shape)}, got {mult}")
    return pad_to(x, [math.ceil(s / m) * m for s, m in zip(spatial, mult)], value, mode)


def center_crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Centre window of the trailing ``len(size)`` axes (padded first when smaller)."""
    return _crop(x, size, False, None)


def random_crop(x: torch.Tensor, size: Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
    """Random window of the trailing ``len(size)`` axes (padded first when smaller)."""
    return _crop(x, size, True, generator)


def _crop(x, size, random_, generator):
    x = pad_to(x, size)
    n = len(size)
    starts = crop_box(x.shape[-n:], size, random_, generator)
    idx = (Ellipsis,) + tuple(slice(s, s + int(t)) for s, t in zip(starts, size))
    return x[idx]


def format_range(lo: float, hi: float) -> str:
    return f"[{lo:.3g}, {hi:.3g}]"


class FileDataset(torch.utils.data.Dataset):
    """Base of the file-backed datasets (see the module docstring).

    Subclasses set ``modality``, ``n_dims``, ``channels``, ``files`` (usable files),
    ``skipped`` (``[(path, reason)]``), ``layout`` and implement ``__len__``, ``_load(i)`` (a
    ``[C, *S]`` float tensor, or ``(tensor, valid extent per axis)`` when the item is padded, or
    ``(tensor, valid, observed)`` with a ``[C, *S]`` bool mask of the values that are not missing; may
    raise for an unreadable file), ``_path(i)``, ``item_info(i)`` and, for the padding share,
    ``extent(i) -> (valid, item_shape)`` without loading. ``pad_multiple`` padding (eval / encode) is
    applied here, after ``_load``, by repeating the edge (``pad_to(mode="replicate")``): a model trained on
    real content reconstructs the real border next to a continuation of it, where a constant (black, silent)
    band is an edge it never saw and costs the border's quality (1.3 dB PSNR on a whole 451x300
    photograph). ``notes`` are lines for the start summary (resampling, position splits, small items,
    skipped files).
    """

    modality: str = ""
    n_dims: int = 0
    channels: int = 0
    data_range: float | None = 2.0
    value_range_text: str = "[-1, 1]"
    max_replacements: int = 32
    pad_multiple: tuple[int, ...] | None = None
    suggested_fix: str | None = None  # the config change that removes most padding (set with a small-items note)

    def __init__(self) -> None:
        self.files: list[Path] = []
        self.skipped: list[tuple[str, str]] = []
        self.notes: list[str] = []
        self.layout = ""
        self.split = "train"
        self._bad: set[str] = set()

    def pinned_options(self) -> dict:
        """The ``data.*`` options this (train) split decided that every other read for the same model must
        share: ``{"channels": ...}`` here (audio adds its sample rate). The training run records them in its
        config, so the val split and a later ``eval`` / ``encode`` of other files give items the model was
        trained on (a grayscale val image of an RGB run reached the model with 1 channel)."""
        return {"channels": int(self.channels)} if self.channels else {}

    def _keep_channel_count(self, meta: list[dict], channels: int | None, voters: Sequence[dict] = ()) -> list[dict]:
        """``meta`` (a dict with ``"channels"`` per file of ``files``) less the files of another channel count than
        ``channels`` (default None: the majority of ``meta`` and ``voters``, e.g. the folder's other split; a tie
        goes to more channels), which leave ``files`` with a warning naming them; sets ``channels`` (0: no file)."""
        want = int(channels) if channels else majority(Counter(m["channels"] for m in [*meta, *voters]))[0]
        why = "expected data.channels=" if channels else "the majority "
        keep = []
        for k, (f, m) in enumerate(zip(self.files, meta)):
            if m["channels"] == want:
                keep.append(k)
                continue
            self.skipped.append((str(f), f"has {m['channels']} channel(s), {why}{want}"))
            warn_data(f"skipping {str(f)!r}: has {m['channels']} channel(s), {why}{want}")
        self.files, self.channels = [self.files[k] for k in keep], want
        return [meta[k] for k in keep]

    # ------------------------------------------------------------------ items
    def _load(self, i: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def _path(self, i: int) -> Path | None:
        return None

    def item_info(self, i: int) -> dict:
        p = self._path(i)
        return {"path": str(p)} if p is not None else {}

    def extent(self, i: int) -> tuple[list[int], list[int]] | None:
        """``(valid extent, item shape)`` of item ``i`` per spatial axis, from the index (no file read);
        None when unknown. Used for :meth:`padding_share`."""
        return None

    def _item(self, j: int, i: int) -> dict:
        out = self._load(j)
        x, valid, observed = (*out, None)[:3] if isinstance(out, tuple) else (out, None, None)
        valid = list(x.shape[1:]) if valid is None else [min(int(v), s) for v, s in zip(valid, x.shape[1:])]
        x = pad_to_multiple(x.float(), self.pad_multiple, mode="replicate")
        item = {"data": x.contiguous(), "index": i, "valid": torch.tensor(valid, dtype=torch.long)}
        if observed is not None:  # missing values inside the real extent (series): False there
            item["observed"] = pad_to_multiple(observed.float(), self.pad_multiple, mode="replicate") > 0.5
        return item

    def _fail(self, path, e: BaseException) -> None:
        self._bad.add(str(path))
        self.skipped.append((str(path), f"{type(e).__name__}: {e}"))
        warn_skip(path, e)

    def try_item(self, i: int) -> dict | None:
        """Item ``i``, or None (with a warning, the file listed in ``skipped``) when its file fails:
        eval / encode skip such items instead of replacing them."""
        path = self._path(i)
        if path is not None and str(path) in self._bad:
            return None
        try:
            return self._item(i, i)
        except Exception as e:  # noqa: BLE001 - any decoder error of one file: skip it
            if path is None:
                raise
            self._fail(path, e)
            return None

    def __getitem__(self, i: int) -> dict:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} items")
        i = i % n
        j = i
        for _ in range(min(self.max_replacements, n)):
            path = self._path(j)
            if path is None or str(path) not in self._bad:
                try:
                    return self._item(j, i)
                except Exception as e:  # noqa: BLE001 - any decoder error of one file: skip it, keep training
                    if path is None:
                        raise
                    self._fail(path, e)
            j = (j + 1) % n
        raise DataError(f"{self.max_replacements} consecutive items from index {i} failed to load; "
                           f"last files: {[s[0] for s in self.skipped[-3:]]}")

    def padding_share(self, max_items: int = 4096) -> float | None:
        """Mean share of each item that is padding (0 = none), over up to ``max_items`` items spread
        over the split; None when the dataset cannot tell without loading."""
        n = len(self)
        if n == 0:
            return None
        shares = []
        for i in sorted({int(k * n / min(n, max_items)) for k in range(min(n, max_items))}):
            e = self.extent(i)
            if e is None:
                return None
            valid, shape = e
            shares.append(1 - math.prod(min(v, s) for v, s in zip(valid, shape)) / max(math.prod(shape), 1))
        return sum(shares) / len(shares)

    def note(self, text: str, warn: bool = False) -> None:
        """Record a line for the start summary (and warn when ``warn``)."""
        if text not in self.notes:
            self.notes.append(text)
            if warn:
                warn_data(text)

    # ------------------------------------------------------------------ summary
    def _shape_text(self) -> str:
        if len(self) == 0:
            return "no items"
        try:
            x = self[0]["data"]
        except Exception as e:  # noqa: BLE001 - the summary must not crash
            return f"first item unreadable ({type(e).__name__})"
        return f"item shape {list(x.shape)} (observed {format_range(float(x.min()), float(x.max()))} in item 0)"

    def summary(self) -> str:
        """One paragraph: files found, items, item shape, value range, skipped files."""
        skipped = f"; {len(self.skipped)} file(s) skipped: {[s[0] for s in self.skipped[:3]]}" if self.skipped else ""
        return (f"{self.modality} dataset ({self.split} split, {self.layout}): {len(self.files)} file(s), "
                f"{len(self)} item(s), {self._shape_text()}; values: {self.value_range_text}{skipped}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.summary()})"

    @property
    def single_file(self) -> bool:
        """True when the split's one file is split by position (val = its last part)."""
        return self.layout.startswith(SINGLE_FILE)

    def _check_files(self, root) -> None:
        if not self.files and not (self.split == "val" and NO_VALIDATION in self.layout):
            bad = f"; all {len(self.skipped)} file(s) were unreadable: {[s[0] for s in self.skipped[:5]]}" if self.skipped else ""
            raise DataError(f"no usable {self.modality} files in {str(root)!r} for the {self.split!r} split{bad}")


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize ``x [C, *S]`` (or ``[N, C, *S]``) to spatial ``size`` (bilinear with antialiasing in 2D,
    trilinear in 3D, linear in 1D)."""
    batched = x.ndim == len(size) + 2
    y = x if batched else x[None]
    size = [int(s) for s in size]
    if list(y.shape[2:]) != size:
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
        y = F.interpolate(y, size=size, mode=mode, align_corners=False, antialias=(mode == "bilinear"))
    return y if batched else y[0]


def fit_and_crop(x: torch.Tensor, target: Sequence[int], mode: str, random_: bool,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``x [..., C, H, W]`` to ``target`` spatial size.

    ``mode``: ``"resize"`` (exactly ``target``, aspect not kept), ``"center"`` / ``"random"`` (scale so
    the image covers ``target``, keeping the aspect, then a centre / random crop; random only when
    ``random_``), ``"none"`` (unchanged).
    """
    if mode == "none":
        return x
    if mode == "resize":
        return resize(x, target)
    n = len(target)
    size = x.shape[-n:]
    scale = max(t / s for t, s in zip(target, size))
    x = resize(x, [max(int(t), round(s * scale)) for s, t in zip(size, target)])
    return _crop(x, target, random_ and mode == "random", generator)


def augment_nd(x: torch.Tensor, n_dims: int, generator: torch.Generator | None = None,
               flip_axes: Sequence[int] | None = None, max_rotate: float = 10.0, max_scale: float = 0.1,
               max_shift: float = 0.05) -> torch.Tensor:
    """Random flips and a small affine transform of ``x [C, *S]`` (torch only).

    Args:
        x: the item, ``n_dims`` spatial axes.
        n_dims: 1, 2 or 3.
        generator: torch RNG. Default None (global RNG; DataLoader workers are seeded per worker).
        flip_axes: spatial axes that may be flipped (p=0.5 each). Default None: all.
        max_rotate: degrees of in-plane rotation (last two axes; 2D/3D). Default 10.
        max_scale: relative zoom range +-. Default 0.1.
        max_shift: shift as a fraction of the size +-. Default 0.05.
    """
    def u(lo, hi):
        return float(torch.empty(()).uniform_(lo, hi, generator=generator))

    for a in (range(n_dims) if flip_axes is None else flip_axes):
        if u(0, 1) < 0.5:
            x = x.flip(1 + a)
    if n_dims == 1 or (max_rotate == 0 and max_scale == 0 and max_shift == 0):
        return x
    theta = torch.eye(n_dims, n_dims + 1)
    ang = math.radians(u(-max_rotate, max_rotate))
    rot = torch.eye(n_dims)
    c, s = math.cos(ang), math.sin(ang)
    rot[-2:, -2:] = torch.tensor([[c, -s], [s, c]])
    theta[:, :n_dims] = rot / u(1 - max_scale, 1 + max_scale)
    theta[:, n_dims] = torch.tensor([u(-2 * max_shift, 2 * max_shift) for _ in range(n_dims)])
    grid = F.affine_grid(theta[None], [1, *x.shape], align_corners=False)  # [1, *S, n_dims]
    return F.grid_sample(x[None], grid, mode="bilinear", padding_mode="reflection", align_corners=False)[0]
