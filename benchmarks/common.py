"""Shared helpers for the benchmarks: timing, peak memory in a fresh process, machine facts, tables.

Timing: warm-up calls are excluded and the median of repeated timings is reported; when two
implementations are compared their timed rounds are interleaved (A, B, A, B, ...) so a change in
machine load during the run hits both alike.

Peak memory: measured in a fresh Python process per measurement and read from the kernel's
``VmHWM`` (``/proc/self/status``, the high-water resident set size of that process's own address
space). ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is *not* used on Linux: ``execve`` copies the
high-water mark of the address space it replaces, so a child started from a large parent reports
at least the parent's peak (measured here: a 1.3 GB parent made an 8 MB child report 1363 MB).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

__all__ = [
    "ROOT",
    "peak_rss_mb",
    "run_isolated",
    "time_calls",
    "interleaved_medians",
    "machine_info",
    "markdown_table",
    "set_threads",
    "real_batch",
]

ROOT = Path(__file__).resolve().parent.parent


def set_threads(n: int) -> None:
    """Use ``n`` intra-op threads (the same for every implementation compared)."""
    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (``VmHWM``; ``ru_maxrss`` where /proc is absent)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB -> MB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def run_isolated(module: str, args: Sequence[str], timeout: float = 900.0) -> dict:
    """Run ``python -m <module> <args>`` in a fresh process; it must print one JSON object as its last line.

    Returns the parsed object. Raises ``RuntimeError`` with the child's stderr when it fails.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=str(ROOT), env=env,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"benchmark worker {module} {' '.join(map(str, args))} failed (exit {proc.returncode}):\n"
            f"{proc.stderr[-3000:]}"
        )
    return json.loads(lines[-1])


def time_calls(fn: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Seconds per call of ``fn`` for ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def interleaved_medians(fns: dict[str, Callable[[], object]], warmup: int, rounds: int,
                        calls_per_round: int = 1) -> dict[str, float]:
    """Median seconds per call for each function, timed in interleaved rounds.

    Every function first gets ``warmup`` untimed calls; then for each of ``rounds`` rounds each
    function is called ``calls_per_round`` times, each call timed on its own.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(calls_per_round):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def machine_info(threads: int) -> dict[str, str]:
    """CPU model and cores (from ``lscpu``), torch version, threads used, UTC date."""
    model, cores = platform.processor() or platform.machine(), str(os.cpu_count())
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            key, _, val = line.partition(":")
            if key.strip() == "Model name":
                model = val.strip()
            elif key.strip() == "CPU(s)":
                cores = val.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "n/a"
    return {
        "cpu": model,
        "cores": cores,
        "threads": str(threads),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load average at start": load,
    }


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; floats get 3 significant digits (or more before the point)."""

    def fmt(v: object) -> str:
        if isinstance(v, float):
            if v != v:  # NaN
                return "n/a"
            if abs(v) >= 100:
                return f"{v:,.0f}"
            if abs(v) >= 10:
                return f"{v:.1f}"
            return f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] * len(headers)) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


_IMAGES: list[torch.Tensor] | None = None


def _sample_images() -> list[torch.Tensor]:
    """Bundled scikit-image photographs as float tensors ``[3, H, W]`` in ``[-1, 1]`` (no downloads)."""
    global _IMAGES
    if _IMAGES is None:
        import numpy as np
        from skimage import data

        imgs = []
        for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry"):
            a = np.asarray(getattr(data, name)(), dtype=np.float32)[..., :3]
            imgs.append(torch.from_numpy(a).permute(2, 0, 1).contiguous() / 127.5 - 1.0)
        _IMAGES = imgs
    return _IMAGES


def real_batch(n_dims: int, batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """A batch of real data cut from bundled photographs, ``[batch, 3, *(size,) * n_dims]``.

    1D: ``size`` consecutive pixels of a photograph read row by row (RGB as 3 channels, like a 3-lead signal).
    2D: random ``size x size`` RGB patches.
    3D: ``size`` frames of a ``size x size`` window panning across a photograph (a camera-pan clip).
    """
    g = torch.Generator().manual_seed(seed)
    imgs = _sample_images()
    out = torch.empty(batch, 3, *(size,) * n_dims)
    for b in range(batch):
        img = imgs[int(torch.randint(len(imgs), (1,), generator=g))]
        _, h, w = img.shape
        if n_dims == 1:
            flat = img.flatten(1)  # [3, H*W], rows one after another
            start = int(torch.randint(flat.shape[1] - size + 1, (1,), generator=g))
            item = flat[:, start:start + size]
        elif n_dims == 2:
            r = int(torch.randint(h - size + 1, (1,), generator=g))
            c = int(torch.randint(w - size + 1, (1,), generator=g))
            item = img[:, r:r + size, c:c + size]
        else:
            r = int(torch.randint(h - 2 * size + 1, (1,), generator=g))
            c = int(torch.randint(w - 2 * size + 1, (1,), generator=g))
            # a diagonal camera pan: frame t is the window shifted by t pixels down and right
            item = torch.stack([img[:, r + t:r + t + size, c + t:c + t + size] for t in range(size)], dim=1)
        out[b] = item
    return out
