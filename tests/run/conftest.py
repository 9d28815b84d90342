"""Tiny in-memory data for fast loop tests (the CLI tests use the real datasets)."""

from __future__ import annotations

import pytest
from train_helpers import TinyImages

from ndvq import build


@pytest.fixture
def tiny_data(monkeypatch):
    """Patch ndvq.build.build_dataset to return TinyImages (24 train / 8 val items)."""
    def build_dataset(cfg, split, stats_dir=None, pad_multiple=None):
        return TinyImages(24 if split == "train" else 8, 0 if split == "train" else 1)

    monkeypatch.setattr(build, "build_dataset", build_dataset)
    return TinyImages
