"""Tiny in-memory data for fast loop tests (the CLI tests use the real datasets)."""

from __future__ import annotations

import pytest
from train_helpers import TinyImages

from ndvq import builders


@pytest.fixture
def tiny_data(monkeypatch):
    """Patch ndvq.builders.build_dataset to return TinyImages (24 train / 8 val items)."""
    def build(cfg, split, stats_dir=None, pad=False):
        return TinyImages(24 if split == "train" else 8, 0 if split == "train" else 1)

    monkeypatch.setattr(builders, "build_dataset", build)
    return TinyImages
