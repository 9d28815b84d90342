"""Tiny trained runs for the prior tests (built once per session in a temp folder)."""

from __future__ import annotations

from pathlib import Path

import pytest
from priorkit import make_run


@pytest.fixture(scope="session")
def image_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("image"))


@pytest.fixture(scope="session")
def audio_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("audio"), "audio")
