"""How close each example model's training step comes to this machine's limit, with and without ``torch.compile``.

For each example config (the built-in default run and ``configs/*/example.yaml``) the model and the
objective are built exactly as ``ndvq train`` builds them (``ndvq.build``), on a batch of the config's
item shape and batch size; one step = forward, objective, backward, optimiser step (``make_optimizer``,
as the loop). Measured in the same process, in interleaved rounds:

- the machine's fp32 GEMM rate (``torch.mm`` of 2048 x 2048 matrices, GFLOP/s) - the ceiling;
- each model's step time (median over rounds of the mean of >= ~0.3 s of steps, after warm-up) eager and compiled, and the compile time (first call);
- each step's FLOPs (``torch.utils.flop_counter.FlopCounterMode``, forward + backward), so
  ``share = FLOPs / step time / GEMM rate``.

Run: ``python -m benchmarks.machine_limit [--configs image default] [--no-compile] [--rounds 5]``.
Ratios inside one run cancel a steady load, not a changing one. On a busy machine use ``--threads 1``
(per-core shares): with more runnable threads than cores two OpenMP threads per step collapse
(docs/benchmarks.md, "Compilation and the machine's limit").
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from benchmarks.common import markdown_table, set_threads, time_calls

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"default": None, "image": "configs/image/example.yaml", "audio": "configs/audio/example.yaml",
           "series": "configs/series/example.yaml", "volume": "configs/volume/example.yaml",
           "video": "configs/video/example.yaml"}
SERIES_CHANNELS = 5  # the series example reads its channel count from the data (in_channels: auto)


def gemm_call(n: int = 2048) -> tuple[Callable[[], object], int]:
    """``(call, flops)``: one fp32 ``torch.mm`` of two ``n x n`` matrices (``2 n^3`` FLOPs), to time
    beside the steps it is compared with (``interleaved_medians``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return (lambda: torch.mm(a, b)), 2 * n ** 3


def gemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """This machine's fp32 matrix-multiply rate in GFLOP/s (median of ``repeats``)."""
    call, flops = gemm_call(n)
    return flops / statistics.median(time_calls(call, warmup=1, repeats=repeats)) / 1e9


def step_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (``torch.utils.flop_counter``: convolutions and matrix products,
    forward and backward; element-wise work and the optimiser are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def item_shape(cfg) -> tuple[int, ...]:
    """``(C, *S)`` of one training item of ``cfg`` (from its data section, as the data layer cuts it)."""
    d, c = cfg.data, cfg.model.in_channels
    c = SERIES_CHANNELS if c == "auto" else int(c)
    if d.kind in ("audio", "series"):
        return (c, d.segment_length)
    if d.kind == "video":
        return (c, d.sequence_length, *(d.resolution or (64, 64)))
    return (c, *(d.patch_size or d.resolution))


def make_step(name: str, compile: bool = False):
    """``(step(), flops per step, batch)`` for the example ``name`` (see :data:`CONFIGS`)."""
    from ndvq import build
    from ndvq.config import load_config
    from ndvq.run.optim import make_optimizer, param_groups

    path = CONFIGS[name]
    cfg = load_config(ROOT / path if path else None, [f"model.in_channels={SERIES_CHANNELS}"] if name == "series" else [])
    torch.manual_seed(0)
    shape = item_shape(cfg)
    x = torch.rand(cfg.train.batch_size, *shape) * 2 - 1
    net = build.build_model(cfg).train()
    net.validate_inputs = False
    objective = build.build_objective(cfg)
    lr = cfg.train.learning_rate
    opt = make_optimizer(param_groups(net, lr, cfg.train.weight_decay), lr, 0.9, 0.999)
    fwd = torch.compile(net) if compile else net

    def step() -> None:
        out = fwd(x)
        res = objective(x, out, 0, step=0)
        res.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    flops = step_flops(lambda: objective(x, net(x), 0, step=0).loss.backward())
    opt.zero_grad(set_to_none=True)
    return step, flops, cfg.train.batch_size


def _log(text: str) -> None:
    print(text, flush=True)


def measure(names, compile: bool = True, rounds: int = 5, warmup: int = 2, log=_log) -> list[dict]:
    """Per example: eager (and compiled) step seconds, compile seconds, GFLOP per step and share of GEMM."""
    rows = []
    for name in names:
        variants = {"eager": make_step(name)}
        compile_s = None
        if compile:
            torch._dynamo.reset()  # a fresh compile per model (no "dynamic shape" recompile of the previous one)
            step, flops, batch = make_step(name, compile=True)
            t = time.perf_counter()
            step()
            compile_s = time.perf_counter() - t
            variants["compiled"] = (step, flops, batch)
        reps = {}
        for k, (fn, _, _) in variants.items():
            for _ in range(warmup):
                t = time.perf_counter()
                fn()
            # a short step is timed over several calls per round (>= ~0.3 s): one 20 ms call is noise
            reps[k] = max(1, round(0.3 / max(time.perf_counter() - t, 1e-4)))
        times = {k: [] for k in variants}
        gemm = []
        for r in range(rounds):  # interleaved: the machine's state is shared by every figure of a round
            gemm.append(gemm_gflops(repeats=3))
            keys = list(variants)
            for k in keys[r % len(keys):] + keys[:r % len(keys)]:  # rotated: no variant always runs first
                fn = variants[k][0]
                t = time.perf_counter()
                for _ in range(reps[k]):
                    fn()
                times[k].append((time.perf_counter() - t) / reps[k])
        flops, rate = variants["eager"][1], statistics.median(gemm)
        row = {"config": name, "batch": variants["eager"][2], "gflop_per_step": flops / 1e9, "gemm_gflops": rate}
        for k in variants:
            sec = statistics.median(times[k])
            row[f"{k}_s"] = sec
            row[f"{k}_share"] = flops / sec / 1e9 / rate
        row["compile_s"] = compile_s
        log(f"  {name}: {row}")
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table of :func:`measure`'s rows."""
    head = ["config", "batch", "GFLOP / step", "GEMM GFLOP/s", "eager s/step", "eager share"]
    has_c = any("compiled_s" in r for r in rows)
    if has_c:
        head += ["compiled s/step", "compiled share", "speed-up", "compile s"]
    out = []
    for r in rows:
        line = [r["config"], r["batch"], f"{r['gflop_per_step']:.1f}", f"{r['gemm_gflops']:.0f}",
                f"{r['eager_s']:.3f}", f"{r['eager_share']:.0%}"]
        if has_c:
            line += [f"{r['compiled_s']:.3f}", f"{r['compiled_share']:.0%}", f"x{r['eager_s'] / r['compiled_s']:.2f}",
                     f"{r['compile_s']:.0f}"]
        out.append(line)
    return markdown_table(head, out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    set_threads(args.threads)
    print(table(measure(args.configs, compile=not args.no_compile, rounds=args.rounds)))


if __name__ == "__main__":
    main()
