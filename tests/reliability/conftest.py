"""Shared fixtures of the reliability suite: one tiny trained run and its codes file (made once per session).

The catalogue and the crash tests treat that run as read-only: tests copy what they change.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from reliability_helpers import TINY, run_cli


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict[str, Path]:
    """``{"run": run dir, "codes": codes.npz, "root": its folder}``: a 4-step run and its encoded val split."""
    root = tmp_path_factory.mktemp("trained")
    assert run_cli(["train", *TINY, f"run.root={root}", "run.name=good"]) == 0
    run = root / "good"
    assert run_cli(["encode", run, "--split", "val", "--out", root / "codes.npz"]) == 0
    shutil.rmtree(run / "tb", ignore_errors=True)  # not needed; keeps snapshots small
    return {"run": run, "codes": root / "codes.npz", "root": root}
