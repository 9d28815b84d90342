"""Time series (1D): NPY / NPZ arrays and CSV / TSV / TXT tables; columns are channels.

A file holds one series ``[T, C]`` (NPY / CSV; a 1-D array is one channel) or several (NPZ: one
per array). Each series is cut into windows of ``segment_length`` steps every ``hop_length``
steps. Items are ``[C, segment_length]`` floats, z-scored per channel with the mean and standard
deviation of the *train split* (``standardize=True``): the train split computes them and saves
them to ``<stats_dir>/data_stats.json``; the val / all splits load that file when it exists (else
they compute the train split's statistics from the same folder). Missing values (NaN / inf) become 0
after standardisation (the channel mean); items mark them (``"observed"``) so that losses and metrics leave
them out, and ``item_info`` records them so that decode writes them back missing. CSV columns that are
not numbers (e.g. timestamps) are dropped; a header row gives the channel names.

Example:
    >>> ds = SeriesFolder("logs/", segment_length=256, stats_dir="runs/x")  # doctest: +SKIP
    >>> ds[0]["data"].shape                                                 # doctest: +SKIP
    torch.Size([6, 256])
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ndvq.data.common import (
    PADDING_WARN_SHARE,
    FileDataset,
    fitting_window,
    split_files,
    split_positions,
    warn_data,
    warn_skip,
    window_starts,
)
from ndvq.errors import DataError

__all__ = ["SeriesFolder", "read_series", "SERIES_EXTENSIONS", "STATS_FILE"]

SERIES_EXTENSIONS = ("npy", "npz", "csv", "tsv", "txt")
STATS_FILE = "data_stats.json"


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return s.strip().lower() in ("", "nan", "na", "null")


def _read_table(path: Path) -> tuple[np.ndarray, list[str]]:
    text = path.read_text(errors="strict")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise DataError("empty table")
    if path.suffix.lower() == ".tsv":
        delim = "\t"
    else:
        try:
            delim = csv.Sniffer().sniff(lines[0] + "\n" + (lines[1] if len(lines) > 1 else ""), ",;\t ").delimiter
        except csv.Error:
            delim = ","
    rows = list(csv.reader(lines, delimiter=delim, skipinitialspace=True))
    header = rows[0] if not all(_is_number(v) for v in rows[0]) else None
    body = rows[1:] if header else rows
    if not body:
        raise DataError("table has a header but no rows")
    width = len(body[0])
    numeric = [j for j in range(width) if all(_is_number(r[j]) for r in body[: min(len(body), 50)] if j < len(r))]
    if not numeric:
        raise DataError(f"no numeric columns (first row: {body[0][:5]})")
    out = np.full((len(body), len(numeric)), np.nan, np.float32)
    for i, r in enumerate(body):
        if len(r) != width:
            raise DataError(f"row {i + 1 + bool(header)} has {len(r)} fields, expected {width}")
        for jj, j in enumerate(numeric):
            v = r[j].strip()
            out[i, jj] = float(v) if v and v.lower() not in ("nan", "na", "null") else np.nan
    names = [header[j] for j in numeric] if header else [f"ch{j}" for j in range(len(numeric))]
    return out, names


def _as_tc(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind not in "fiub":
        raise DataError(f"{what} has dtype {a.dtype}, expected numbers")
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] < 1:
        raise DataError(f"{what} must be [T] or [T, C] (time first, columns = channels), got shape {a.shape}")
    return a.astype(np.float32)


def _no_pickle(load, what: str) -> np.ndarray:
    """``load()``, with numpy's refusal of pickled (object) arrays turned into a one-line DataError."""
    try:
        return load()
    except ValueError as e:
        if "pickle" not in str(e):
            raise
        raise DataError(f"{what} holds pickled Python objects, which ndvq never loads; save a numeric array "
                        "(e.g. np.save(path, a.astype(np.float32)))") from None


def read_series(path: str | Path) -> list[tuple[str, np.ndarray, list[str]]]:
    """``[(name, float32 [T, C], channel names), ...]`` from one file (several for NPZ)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        a = _as_tc(_no_pickle(lambda: np.load(path, allow_pickle=False), "array"), "array")
        return [("", a, [f"ch{j}" for j in range(a.shape[1])])]
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            out = []
            for k in z.files:
                a = _as_tc(_no_pickle(lambda k=k: z[k], f"array {k!r}"), f"array {k!r}")
                out.append((k, a, [f"ch{j}" for j in range(a.shape[1])]))
        if not out:
            raise DataError("NPZ file holds no arrays")
        return out
    a, names = _read_table(path)
    return [("", a, names)]


def missing_runs(a: np.ndarray) -> list[list[int]]:
    """``[[channel, first step, steps], ...]``: the runs of missing (non-finite) values of ``a [T, C]``, what
    ``item_info`` records so that decode writes them back missing (:func:`restore_missing`)."""
    runs = []
    for c in np.flatnonzero((~np.isfinite(a)).any(0)):
        gap = np.concatenate([[False], ~np.isfinite(a[:, c]), [False]])
        edges = np.flatnonzero(np.diff(gap.astype(np.int8)))  # starts and ends of the runs, alternating
        runs += [[int(c), int(b), int(e - b)] for b, e in zip(edges[::2], edges[1::2])]
    return runs


def restore_missing(a: np.ndarray, runs) -> np.ndarray:
    """``a [T, C]`` with the runs of :func:`missing_runs` set to NaN (runs past ``a``'s end are cut)."""
    a = np.array(a, dtype=np.float32)
    for c, b, n in runs or ():
        if 0 <= int(c) < a.shape[1]:
            a[int(b): int(b) + int(n), int(c)] = np.nan
    return a


class SeriesFolder(FileDataset):
    """Windows of multichannel time series from a folder (whole series with ``pad_multiple``).

    Args:
        root: data folder (layouts in :mod:`ndvq.data.common`).
        split: ``"train" | "val" | "all"``. Default ``"train"``.
        val_dir, train_split, split_seed, subfolders: as for images. Defaults None, 0.9, 0, None.
        extensions: Default ``npy npz csv tsv txt``.
        channels: keep the first ``channels`` columns (files with fewer are skipped). Default None: the
            column count most files have (the val split: the train split's); other files are skipped
            with a warning naming them.
        segment_length: time steps per window. Default 16384 (set it to your data, e.g. 256).
        hop_length: steps between window starts. Default None: ``segment_length``.
        standardize: per-channel z-score with train-split statistics. Default True.
        stats_dir: folder of ``data_stats.json`` (saved by the train split, loaded by the others).
            Default None: computed in memory only.
        pad_multiple: whole series, padded at the end (the last value repeated) to a multiple of this
            (eval / encode). Default None.

    A series shorter than one window gives one window padded with 0 (the mean; its ``valid`` extent
    says where). A single file is split by time (val = its last part). Val series whose mean lies
    more than 10 train standard deviations from the train mean are named in a warning.
    """

    modality, n_dims = "series", 1
    outlier_sigma = 10.0

    def __init__(self, root, split: str = "train", val_dir=None, train_split: float = 0.9, split_seed: int = 0,
                 subfolders: Sequence[str] | None = None, extensions: Sequence[str] | None = None,
                 channels: int | None = None, segment_length: int = 16384, hop_length: int | None = None,
                 standardize: bool = True, stats_dir=None, pad_multiple: Sequence[int] | None = None):
        super().__init__()
        if int(segment_length) < 1:
            raise DataError(f"segment_length must be >= 1, got {segment_length}")
        self.split, self.standardize = split, bool(standardize)
        self.segment_length = int(segment_length)
        self.hop_length = int(hop_length or segment_length)
        self.pad_multiple = tuple(pad_multiple) if pad_multiple is not None else None
        self.whole = self.pad_multiple is not None
        self.stats_dir = Path(stats_dir) if stats_dir is not None else None
        self._opts = dict(val_dir=val_dir, train_split=train_split, split_seed=split_seed, subfolders=subfolders,
                          extensions=extensions or SERIES_EXTENSIONS)
        files, self.layout = split_files(root, split, self._opts["extensions"], val_dir, train_split, split_seed,
                                         subfolders)
        saved = self._saved_stats()
        width = channels or (len(saved["mean"]) if saved else None)
        self.series, self.names, self.columns_of = self._read_all(files, width, fixed=channels is not None)
        self._check_files(root)
        self.channels = self.series[0][1].shape[1] if self.series else int(width or 1)
        self.columns = self.columns_of[0] if self.columns_of else [f"ch{j}" for j in range(self.channels)]
        self.stats = saved or self._statistics(root, width, channels is not None)
        self.windows: list[tuple[int, int, int]] = []  # (series number, start, real steps)
        for k, (_, a) in enumerate(self.series):
            self.windows += self._series_windows(k, a.shape[0], train_split)
        mean, std = np.asarray(self.stats["mean"], np.float32), np.asarray(self.stats["std"], np.float32)
        self._mean, self._std = mean, std
        if self.standardize:
            lo = (np.asarray(self.stats["min"]) - mean) / std
            hi = (np.asarray(self.stats["max"]) - mean) / std
            self.value_range_text = "z-scored per channel (train-split mean/std)"
        else:
            lo, hi = np.asarray(self.stats["min"]), np.asarray(self.stats["max"])
            self.value_range_text = "as stored"
        self.data_range = float(max(np.max(hi - lo), 1e-6))
        if split != "train":
            self._check_distribution()
        gaps = [int((~np.isfinite(a)).sum()) for _, a in self.series]
        if sum(gaps):
            self.note(f"{sum(gaps)} missing value(s) (NaN / inf) in {sum(g > 0 for g in gaps)} of {len(gaps)} series: "
                      "read as the channel mean, left out of losses and metrics, written back missing by decode")
        short = sum(a.shape[0] < self.segment_length for _, a in self.series)
        if short and not self.whole:
            fit = fitting_window([a.shape[0] for _, a in self.series], self.segment_length, self.hop_length)
            smaller = fit < self.segment_length and split != "val"  # the val split's: the train split's to choose
            self.suggested_fix = f"data.segment_length={fit}" if smaller else None
            self.note(f"{short} of {len(self.series)}{'' if split == 'all' else ' ' + split} series are shorter than "
                      f"data.segment_length={self.segment_length} and are padded"
                      + (f"; data.segment_length={fit} keeps the padding within {PADDING_WARN_SHARE:.0%} of a window"
                         if smaller else ""), warn=short * 2 > len(self.series))

    # ------------------------------------------------------------------ reading
    def _read_all(self, files, width: int | None, fixed: bool = False, quiet: bool = False):
        """Series of ``files`` with ``width`` columns (default: the majority's); others are skipped."""
        parts_of = []
        for f in files:
            try:
                parts_of.append((f, read_series(f)))
            except Exception as e:  # noqa: BLE001 - an unreadable file is skipped, never fatal
                if not quiet:
                    self.skipped.append((str(f), f"{type(e).__name__}: {e}"))
                    warn_skip(f, e)
        if width is None and parts_of:
            width = Counter(a.shape[1] for _, parts in parts_of for _, a, _ in parts).most_common(1)[0][0]
        series, names, columns = [], [], []
        for f, parts in parts_of:
            bad = [a.shape[1] for _, a, _ in parts if a.shape[1] < width or (not fixed and a.shape[1] != width)]
            if not bad:
                bad = [0 for _, a, _ in parts if not np.isfinite(a).any()]
                reason = "holds no finite values" if bad else ""
            else:
                reason = f"has {bad[0]} column(s), the {'data.channels' if fixed else 'majority of files'} {width}"
            if bad:
                if not quiet:
                    self.skipped.append((str(f), reason))
                    warn_data(f"skipping {str(f)!r}: {reason}")
                continue
            if not quiet:
                self.files.append(f)
            for key, a, cols in parts:
                series.append((f, a[:, :width]))
                names.append(key)
                columns.append(list(cols[:width]))
        return series, names, columns

    def pinned_options(self) -> dict:
        """None: the train split's column count travels in its saved statistics, and the other splits skip
        files of another width (``data.channels`` would keep their first columns instead)."""
        return {}

    def _saved_stats(self) -> dict | None:
        """The train split's statistics saved in ``stats_dir`` (val / all splits), else None."""
        path = self.stats_dir / STATS_FILE if self.stats_dir is not None else None
        if self.split == "train" or path is None or not path.is_file():
            return None
        return json.loads(path.read_text())

    def _statistics(self, root, width, fixed) -> dict:
        path = self.stats_dir / STATS_FILE if self.stats_dir is not None else None
        if self.split == "train" or self.single_file:
            source = self.series if self.split == "train" else [
                (f, a[: split_positions(a.shape[0], "train", self._opts["train_split"])[1]]) for f, a in self.series]
        else:
            train_files, _ = split_files(root, "train", **self._opts)
            source = self._read_all(train_files, width or self.channels, fixed, quiet=True)[0] or self.series
        stats = _compute_stats([a for _, a in source])
        stats["files"] = len({str(f) for f, _ in source})
        if self.split == "train" and path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({**stats, "columns": self.columns, "root": str(root)}, indent=1))
            os.replace(tmp, path)
        return stats

    def _check_distribution(self) -> None:
        """Warn about series whose mean lies beyond ``outlier_sigma`` train standard deviations, or whose
        column names differ from the train split's."""
        far, renamed = [], []
        train_cols = self.stats.get("columns")
        for (f, a), cols in zip(self.series, self.columns_of):
            with np.errstate(all="ignore"):
                z = np.abs((np.nanmean(a, axis=0) - self._mean) / self._std)
            if np.nanmax(z, initial=0) > self.outlier_sigma:
                far.append(f"{Path(f).name} ({float(np.nanmax(z)):.0f} sigma)")
            if train_cols and list(cols) != list(train_cols) and not all(c.startswith("ch") for c in cols):
                renamed.append(f"{Path(f).name} {cols}")
        if far:
            self.note(f"{len(far)} {self.split} series lie beyond {self.outlier_sigma:g} sigma of the train "
                      f"statistics (another quantity or unit?): {far[:5]}", warn=True)
        if renamed:
            self.note(f"{len(renamed)} {self.split} series have other column names than the train split "
                      f"{train_cols}: {renamed[:5]}", warn=True)

    def _series_windows(self, k: int, n: int, train_split: float) -> list[tuple[int, int, int]]:
        lo, hi = split_positions(n, self.split, train_split) if self.single_file else (0, n)
        if self.whole:
            return [(k, lo, hi - lo)]
        return [(k, s, min(self.segment_length, hi - s))
                for s in window_starts(lo, hi, self.segment_length, self.hop_length)]

    # ------------------------------------------------------------------ items
    def __len__(self) -> int:
        return len(self.windows)

    def _path(self, i: int) -> Path:
        return self.series[self.windows[i][0]][0]

    def extent(self, i: int) -> tuple[list[int], list[int]]:
        _, _, n = self.windows[i]
        return [n], [n if self.whole else self.segment_length]

    def item_info(self, i: int) -> dict:
        """``{"path", "key" (NPZ array), "start", "columns" (of this file), "item_shape", "mean", "std",
        "standardized", "source_format"}``."""
        k, start, n = self.windows[i]
        path = self.series[k][0]
        info = {"path": str(path), "key": self.names[k], "start": start, "columns": self.columns_of[k],
                "item_shape": [n], "source_format": Path(path).suffix.lower().lstrip("."),
                "mean": self._mean.tolist(), "std": self._std.tolist(), "standardized": self.standardize}
        gaps = missing_runs(self.series[k][1][start: start + n])
        return {**info, "missing": gaps} if gaps else info

    def _load(self, i: int) -> tuple[torch.Tensor, list[int], torch.Tensor]:
        """``(x [C, T], [real steps], observed [C, T])``: ``observed`` is False at missing values (read as
        the channel mean, 0 after standardisation), which losses and metrics leave out (``valid_mask``)."""
        k, start, n = self.windows[i]
        a = np.asarray(self.series[k][1][start: start + n], np.float32)  # [T, C]
        observed = np.isfinite(a)
        if self.standardize:
            a = (a - self._mean) / self._std
        a = np.where(observed, a, 0.0 if self.standardize else self._mean).astype(np.float32)
        x = torch.from_numpy(np.ascontiguousarray(a.T))  # [T, C] -> [C, T]
        seen = torch.from_numpy(np.ascontiguousarray(observed.T))  # [T, C] -> [C, T]
        if not self.whole and x.shape[1] < self.segment_length:
            x = torch.nn.functional.pad(x, (0, self.segment_length - x.shape[1]))
            seen = torch.nn.functional.pad(seen, (0, self.segment_length - seen.shape[1]))
        return x, [n], seen


def _compute_stats(arrays: list[np.ndarray]) -> dict:
    """Per-channel mean / std / min / max over all time steps of ``arrays`` (NaN ignored)."""
    c = arrays[0].shape[1]
    n = np.zeros(c)
    s = np.zeros(c)
    ss = np.zeros(c)
    lo = np.full(c, np.inf)
    hi = np.full(c, -np.inf)
    for a in arrays:
        a = np.asarray(a, np.float64)
        ok = np.isfinite(a)
        n += ok.sum(0)
        s += np.where(ok, a, 0).sum(0)
        ss += np.where(ok, a * a, 0).sum(0)
        if ok.any():
            lo = np.minimum(lo, np.where(ok, a, np.inf).min(0))
            hi = np.maximum(hi, np.where(ok, a, -np.inf).max(0))
    n = np.maximum(n, 1)
    mean = s / n
    std = np.sqrt(np.maximum(ss / n - mean**2, 0))
    std = np.where(std > 1e-8 * np.maximum(np.abs(mean), 1), std, 1.0)
    lo = np.where(np.isfinite(lo), lo, 0)
    hi = np.where(np.isfinite(hi), hi, 0)
    return {"mean": mean.tolist(), "std": std.tolist(), "min": lo.tolist(), "max": hi.tolist(),
            "count": n.astype(int).tolist(), "method": "per-channel z-score over all time steps of the train split"}

