"""Tiny trained runs (1D audio, 2D image, 3D volume, a residual-VQ image run) and their data files,
shared by the codec tests (trained once per test session)."""

from __future__ import annotations

import pytest
from codeckit import Run, make_run


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """``runs(kind) -> Run``, each trained once per session."""
    cache: dict[str, Run] = {}

    def get(kind: str) -> Run:
        if kind not in cache:
            cache[kind] = make_run(tmp_path_factory.mktemp(f"codec-{kind}"), kind)
        return cache[kind]

    return get
