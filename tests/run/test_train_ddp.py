"""2-process CPU DDP (gloo, Fabric ddp_spawn): codebooks and weights identical on both ranks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def test_two_process_ddp_keeps_ranks_identical(tmp_path):
    script = Path(__file__).parent / "ddp_script.py"
    r = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "RESULT 3 finished" in r.stdout
    s0, s1 = torch.load(tmp_path / "rank0.pt", weights_only=True), torch.load(tmp_path / "rank1.pt", weights_only=True)
    codebook_keys = [k for k in s0 if "quantizer" in k]
    assert codebook_keys, list(s0)
    for k in s0:
        assert torch.equal(s0[k], s1[k]), f"{k} differs between ranks"
    run = tmp_path / "ddp"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if r["split"] == "train"] == [1, 2, 3]  # rank 0 alone writes
    assert recs[0]["lr"] == pytest.approx(2 * 3e-4)  # train.learning_rate x world size (scale_lr_by_world_size)
