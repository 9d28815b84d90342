"""Built-in sample data: real photographs, deterministic, cached, held-out validation image."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ndvq.data import create_dataset
from ndvq.data.samples import make_sample_patches


def test_samples_shapes_range_and_split():
    tr = create_dataset("samples", "train", patch_size=[32, 32], sample_patches=256)
    va = create_dataset("samples", "val", patch_size=[32, 32], sample_patches=256)
    al = create_dataset("samples", "all", patch_size=[32, 32], sample_patches=256)
    assert (len(tr), len(va), len(al)) == (256, 64, 320)
    assert tr.modality == "image" and tr.channels == 3 and tr.n_dims == 2 and tr.data_range == 2.0
    x = torch.stack([tr[i]["data"] for i in range(64)])
    assert x.shape == (64, 3, 32, 32) and float(x.min()) >= -1 and float(x.max()) <= 1
    assert float(x.std()) > 0.1  # real, textured content (flat patches are redrawn)
    assert torch.equal(al[256]["data"], va[0]["data"])
    # no val patch appears in the train split (held-out photograph)
    t = {bytes(np.asarray(make_sample_patches("train", (32, 32), 256)[i])) for i in range(256)}
    assert not any(bytes(np.asarray(make_sample_patches("val", (32, 32), 64)[i])) in t for i in range(64))


def test_samples_deterministic_and_cached(tmp_path, monkeypatch):
    a = np.array(make_sample_patches("train", (16, 16), 100))
    cache = os.environ["NDVQ_CACHE"]
    cached = list((Path(cache) / "samples").glob("*.npy"))
    assert len(cached) == 1
    monkeypatch.setenv("NDVQ_CACHE", str(tmp_path / "fresh"))  # rebuilt elsewhere: same bytes
    b = np.array(make_sample_patches("train", (16, 16), 100))
    assert np.array_equal(a, b)
    mtime = cached[0].stat().st_mtime_ns
    monkeypatch.setenv("NDVQ_CACHE", cache)
    make_sample_patches("train", (16, 16), 100)
    assert cached[0].stat().st_mtime_ns == mtime  # served from the cache, not rewritten


def test_gray_and_padding():
    ds = create_dataset("samples", "val", patch_size=[24, 24], sample_patches=64, channels=1, pad_multiple=(16, 16))
    assert ds[0]["data"].shape == (1, 32, 32)
