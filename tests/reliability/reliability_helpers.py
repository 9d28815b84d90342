"""Helpers of the reliability suite (a unique module name: ``tests/run`` has its own conftest)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
