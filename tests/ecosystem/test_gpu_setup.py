"""GPU set-up without a GPU: ``scripts/setup.sh --cuda`` (dry run) and ``python -m benchmarks --device cuda``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _setup(*flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NDVQ_VENV": str(Path(sys.executable).parent.parent)}  # the venv running the tests
    return subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh"), *flags, "--dry-run"], capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.mark.skipif(torch.version.cuda is not None, reason="this venv already has a CUDA build of torch")
def test_setup_cuda_installs_the_cuda_build_of_torch():
    r = _setup("--cuda", "--test")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("+ ")]
    assert "PIP_FIND_LINKS= " in lines[0] and "install --force-reinstall torch==2.13.0" in lines[0]
    assert "+cpu" not in lines[0] and lines[1].endswith("install -e .[test]")


def test_setup_without_cuda_keeps_the_installed_torch():
    r = _setup()
    assert r.returncode == 0, r.stderr
    assert [ln for ln in r.stdout.splitlines() if ln.startswith("+ ")][-1].endswith("install -e .")
    assert "torch==" not in r.stdout  # torch is present: not reinstalled
    bad = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh"), "--gpu"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option --gpu" in bad.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the suite would run")
def test_benchmarks_device_cuda_without_a_gpu_says_so_and_exits_0():
    r = subprocess.run([sys.executable, "-m", "benchmarks", "--device", "cuda", "--quick"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "no CUDA device on this machine" in r.stdout and "setup.sh --cuda" in r.stdout


def test_gpu_section_runs_its_steps(monkeypatch):
    """The GPU suite's code path, on the CPU (the CUDA calls are skipped), with tiny sizes."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.__main__ import gpu_section

    table = gpu_section(quick=True, warmup=0, repeats=1, log=lambda *_: None, device="cpu")
    rows = [ln for ln in table.splitlines()[2:] if ln.startswith("|")]
    assert len(rows) == 3 * 2 * 2 and sum("bf16-mixed" in r for r in rows) == 6
