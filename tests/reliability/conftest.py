"""Shared fixtures of the reliability suite: one tiny trained run and its codes file (made once per session).

The catalogue and the crash tests treat that run as read-only: tests copy what they change.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
TINY = ["model.videogpt.n_hiddens=16", "model.videogpt.num_res_blocks=1", "model.embedding_dim=8",
        "model.n_codes=32", "model.videogpt.n_head=0", "model.videogpt.norm=group",
        "model.videogpt.norm_num_groups=8", "train.batch_size=4", "train.sample_interval=1000",
        "train.num_workers=0", "train.doctor_warnings=false", "data.sample_patches=64", "train.val_batches=1",
        "train.log_interval=2", "train.val_interval=4", "train.ckpt_interval=4", "train.max_steps=4"]
"""A tiny VQ-VAE on 64 patches of the built-in sample images: a few seconds on a CPU."""


def run_cli(argv: list[str]) -> int:
    from ndvq.cli import main

    return main([str(a) for a in argv])


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict[str, Path]:
    """``{"run": run dir, "codes": codes.npz, "root": its folder}``: a 4-step run and its encoded val split."""
    root = tmp_path_factory.mktemp("trained")
    assert run_cli(["train", *TINY, f"run.root={root}", "run.name=good"]) == 0
    run = root / "good"
    assert run_cli(["encode", run, "--split", "val", "--out", root / "codes.npz"]) == 0
    shutil.rmtree(run / "tb", ignore_errors=True)  # not needed; keeps snapshots small
    return {"run": run, "codes": root / "codes.npz", "root": root}


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """``{path: (size, mtime_ns)}`` of every file under ``roots`` (``__pycache__`` ignored)."""
    out = {}
    for root in roots:
        for dirpath, dirnames, files in os.walk(root):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for f in files:
                p = os.path.join(dirpath, f)
                st = os.lstat(p)
                out[p] = (st.st_size, st.st_mtime_ns)
            for d in dirnames:
                out[os.path.join(dirpath, d) + "/"] = (0, 0)
    return out


def python() -> str:
    return sys.executable
