"""Datasets for every dimensionality, selected by ``data.kind`` (see docs/data.md).

``create_dataset(kind, split, **options)`` returns a torch ``Dataset`` whose items are
``{"data": FloatTensor[C, *S], "index": i}``:

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

import inspect
import logging

from ndvq.data.audio import AudioFolder
from ndvq.data.common import FileDataset, cache_dir
from ndvq.data.image import ImageFolder
from ndvq.data.samples import SampleImages
from ndvq.data.series import SeriesFolder
from ndvq.data.video import VideoFolder
from ndvq.data.volume import VolumeFolder
from ndvq.data.writers import write_item, write_samples

__all__ = [
    "create_dataset",
    "DATASETS",
    "OPTIONS",
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

# every option create_dataset accepts (the DataConfig fields other than kind, plus pad_multiple and
# stats_dir, and the class-only index_path (video) and cache_mb (volume)); each dataset takes the ones
# in its signature and ignores the rest
OPTIONS = frozenset({
    "root", "val_dir", "train_split", "split_seed", "subfolders", "extensions", "channels", "resolution",
    "patch_size", "patches_per_item", "crop", "augment", "sequence_length", "frame_stride", "clip_stride",
    "sample_rate", "mono", "segment_length", "hop_length", "normalize", "standardize", "intensity",
    "percentiles", "ct_window", "sample_patches", "pad_multiple", "stats_dir", "index_path", "cache_mb",
})

log = logging.getLogger("ndvq.data")


def create_dataset(kind: str, split: str = "train", **options) -> FileDataset:
    """The dataset of ``kind`` for ``split``.

    Args:
        kind: ``"samples" | "image" | "video" | "audio" | "series" | "volume"``.
        split: ``"train" | "val" | "all"``. Default ``"train"``.
        **options: ``DataConfig`` fields other than ``kind`` (each dataset uses those that apply to
            it), plus ``pad_multiple`` (per-axis multiple whole items are padded to, for eval/encode)
            and ``stats_dir`` (where series statistics are saved/loaded). An unknown option is a
            ``TypeError``.

    Raises:
        ValueError: unknown kind or split, no usable files (naming the folder and extensions).
        FileNotFoundError: a missing data folder.
    """
    if kind not in DATASETS:
        raise ValueError(f"data.kind must be one of {sorted(DATASETS)}, got {kind!r}")
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise TypeError(f"unknown data option(s) {unknown}; expected some of {sorted(OPTIONS)}")
    cls = DATASETS[kind]
    accepted = set(inspect.signature(cls.__init__).parameters)
    kwargs = {k: v for k, v in options.items() if k in accepted}
    if "root" in accepted and kwargs.get("root") is None:
        raise ValueError(f"data.kind={kind!r} needs data.root (the folder of files); "
                         f"data.kind='samples' needs none")
    ds = cls(split=split, **kwargs)
    if log.isEnabledFor(logging.INFO):
        log.info(ds.summary())
    return ds
