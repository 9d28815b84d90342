"""tests/data set-up: a private NDVQ_CACHE per test."""

import pytest


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """Every test gets its own NDVQ_CACHE (nothing is written to the user's cache)."""
    monkeypatch.setenv("NDVQ_CACHE", str(tmp_path_factory.mktemp("ndvq_cache")))
