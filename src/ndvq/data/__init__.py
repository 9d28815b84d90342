"""Datasets for every dimensionality, selected by ``data.kind`` (see docs/data.md).

``create_dataset(kind, split, **options)`` (options: the ``DataConfig`` fields as keywords) returns a
torch ``Dataset`` whose items are ``{"data": FloatTensor[C, *S], "index": i}``:

==========  =====================  ==============  ===========================================
kind        class                  item            values
==========  =====================  ==============  ===========================================
samples     :class:`SampleImages`  ``[3, H, W]``   ``[-1, 1]`` (built-in photographs)
image       :class:`ImageFolder`   ``[C, H, W]``   ``[-1, 1]``
video       :class:`VideoFolder`   ``[C, T, H, W]`` ``[-1, 1]``
audio       :class:`AudioFolder`   ``[C, L]``      ``[-1, 1]``
series      :class:`SeriesFolder`  ``[C, L]``      z-scored per channel (train-split statistics)
volume      :class:`VolumeFolder`  ``[C, X, Y, Z]`` ``[-1, 1]``
==========  =====================  ==============  ===========================================

Example:
    >>> from ndvq.data import create_dataset
    >>> ds = create_dataset("samples", "val", patch_size=[32, 32], sample_patches=512)
    >>> item = ds[0]
    >>> item["data"].shape, ds.modality, ds.data_range
    (torch.Size([3, 32, 32]), 'image', 2.0)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ndvq.data.audio import AudioFolder
from ndvq.data.common import FileDataset, cache_dir
from ndvq.data.image import ImageFolder
from ndvq.data.samples import SampleImages
from ndvq.data.series import SeriesFolder
from ndvq.data.video import VideoFolder
from ndvq.data.volume import VolumeFolder
from ndvq.data.writers import write_item, write_samples
from ndvq.errors import ConfigError

__all__ = [
    "create_dataset",
    "DATASETS",
    "KIND_OPTIONS",
    "FileDataset",
    "SampleImages",
    "ImageFolder",
    "VideoFolder",
    "AudioFolder",
    "SeriesFolder",
    "VolumeFolder",
    "write_item",
    "write_samples",
    "cache_dir",
]

DATASETS = {"samples": SampleImages, "image": ImageFolder, "video": VideoFolder, "audio": AudioFolder,
            "series": SeriesFolder, "volume": VolumeFolder}

#: The options each kind uses (== its class's keyword arguments, minus split and the class-only
#: ``index_path`` (video) / ``cache_mb`` (volume)); ``create_dataset`` passes only these.
_FILES = ("root", "val_dir", "train_split", "split_seed", "subfolders", "extensions", "channels", "pad_multiple")
KIND_OPTIONS = {
    "samples": ("patch_size", "sample_patches", "channels", "augment", "pad_multiple"),
    "image": (*_FILES, "resolution", "crop", "patch_size", "patches_per_item", "augment"),
    "video": (*_FILES, "resolution", "crop", "sequence_length", "frame_stride", "clip_stride", "augment"),
    "audio": (*_FILES, "sample_rate", "mono", "segment_length", "hop_length", "normalize"),
    "series": (*_FILES, "segment_length", "hop_length", "standardize", "stats_dir"),
    "volume": (*_FILES, "patch_size", "patches_per_item", "intensity", "percentiles", "ct_window", "augment"),
}

log = logging.getLogger("ndvq.data")


def create_dataset(
    kind: str = "samples", split: str = "train", *, root=None, val_dir=None, train_split: float = 0.9,
    split_seed: int = 0, subfolders: Sequence[str] | None = None, extensions: Sequence[str] | None = None,
    channels: int | None = None, resolution: Sequence[int] | None = None, patch_size: Sequence[int] | None = None,
    patches_per_item: int = 1, crop: str = "center", augment: bool = False, sequence_length: int = 16,
    frame_stride: int = 1, clip_stride: int | None = None, sample_rate: int | None = None, mono: bool = True,
    segment_length: int = 16384, hop_length: int | None = None, normalize: str = "peak", standardize: bool = True,
    intensity: str = "percentile", percentiles: Sequence[float] = (0.5, 99.5),
    ct_window: Sequence[float] = (-1000.0, 1000.0), sample_patches: int = 2048,
    pad_multiple: Sequence[int] | None = None, stats_dir=None,
) -> FileDataset:
    """The dataset of ``kind`` for ``split``; the keyword options are ``DataConfig``'s fields.

    Each kind uses the options listed in :data:`KIND_OPTIONS` and ignores the others, so
    ``create_dataset(**cfg.data.model_dump(), split="val")`` works for every kind. What each
    option means: docs/data.md and ``ndvq.config.DataConfig``.

    Args:
        kind: ``"samples" | "image" | "video" | "audio" | "series" | "volume"``. Default ``"samples"``.
        split: ``"train" | "val" | "all"``. Default ``"train"``.
        root: data folder (every kind but samples). Default None.
        val_dir, train_split (0.9), split_seed (0), subfolders, extensions, channels: which files
            form each split and how many channels items get (file-based kinds).
        resolution, crop ("center"), patch_size, patches_per_item (1), augment (False): image /
            video / volume geometry (samples: patch_size, augment).
        sequence_length (16), frame_stride (1), clip_stride: video clips.
        sample_rate, mono (True), normalize ("peak"): audio; segment_length (16384), hop_length:
            audio and series windows; standardize (True): series z-scoring.
        intensity ("percentile"), percentiles ((0.5, 99.5)), ct_window ((-1000, 1000)): volumes.
        sample_patches: patches cut from the built-in sample images (samples). Default 2048.
        pad_multiple: per-axis multiple whole items are padded to (eval/encode). Default None.
        stats_dir: where series statistics are saved/loaded. Default None.

    Raises:
        ConfigError: unknown kind or split, no ``root`` for a file-based kind.
        DataError / ValueError: no usable files (naming the folder and extensions), bad option values.
        FileNotFoundError: a missing data folder.
    """
    options = dict(locals())  # every parameter by name; each kind takes its own below
    if kind not in DATASETS:
        raise ConfigError(f"data.kind must be one of {sorted(DATASETS)}, got {kind!r}")
    if split not in ("train", "val", "all"):
        raise ConfigError(f"split must be 'train', 'val' or 'all', got {split!r}")
    if "root" in KIND_OPTIONS[kind] and root is None:
        raise ConfigError(f"data.kind={kind!r} needs data.root (the folder of files); "
                          f"data.kind='samples' needs none")
    ds = DATASETS[kind](split=split, **{k: options[k] for k in KIND_OPTIONS[kind]})
    if log.isEnabledFor(logging.INFO):
        log.info(ds.summary())
    return ds
