"""The whole benchmark suite in one run: ``python -m benchmarks [--quick]``.

Runs, in one process (peak-memory figures in fresh child processes), and prints as Markdown:

1. training throughput of ``ndvq.VQVAE`` vs the reference ``nd_vq_vae.NDimVQVAE`` at the same
   architecture, 1D/2D/3D, n_codes 512 / 4096 / 16384 (``benchmarks/train_throughput.py``);
2. cost curves of ndvq's training step as batch size, input size and n_codes double, plus
   bf16-mixed precision;
3. encode throughput and peak memory through the ``ndvq encode`` path, including 1,000,000 latent
   vectors against 65,536 codes (``benchmarks/encode.py``);
4. the quantizer micro-benchmark (``benchmarks/quantizer.py``);
5. the issue-8 targets, met or not, with the measured values.

The full run writes ``docs/benchmarks.md`` (machine, torch version, date, load average);
``--quick`` uses tiny sizes (a smoke run, about a minute) and writes nothing unless ``--out`` is given.

``--device cuda`` runs the training-throughput suite on the GPU instead (fp32 and bf16-mixed, 1D/2D/3D,
n_codes 512 / 4096 / 16384, peak GPU memory) and writes ``docs/benchmarks-gpu.md``; on a machine
without a CUDA device it says so and exits 0.
Run it from the repository root in the benchmark environment (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

from benchmarks import encode as enc
from benchmarks import train_throughput as tt
from benchmarks.common import ROOT, machine_info, markdown_table, set_threads

TARGETS = {"ratio_512": 1.3, "ratio_4096": 2.5, "max_drop": 0.35, "encode_peak_mb": 4096.0}


def cost_curves(quick: bool, warmup: int, repeats: int, log=print) -> tuple[str, dict]:
    """ndvq training step as batch, input size and n_codes double (2D), and fp32 vs bf16-mixed."""
    base = replace(tt.QUICK_ARCHS[2] if quick else tt.DEFAULT_ARCHS[2], n_codes=256 if quick else 4096)
    series = {
        "batch": [replace(base, batch=b) for b in ((2, 4, 8) if quick else (8, 16, 32, 64, 128))],
        "input size": [replace(base, size=s) for s in ((8, 16, 32) if quick else (16, 32, 64))],
        "n_codes": [replace(base, n_codes=k) for k in ((64, 128, 256) if quick else
                                                        (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536))],
    }
    series["n_codes, classic lookup"] = series["n_codes"]
    rows, raw = [], {}
    for name, archs in series.items():
        prev = None
        for a in archs:
            over = {"quantizer": tt.FULL_DIM} if "classic" in name else {}
            sps = tt.ndvq_throughput(a, warmup=warmup, repeats=repeats, **over)
            ms = a.batch / sps * 1e3
            value = {"batch": a.batch, "input size": "x".join([str(a.size)] * a.n_dims)}.get(name, f"{a.n_codes:,}")
            growth = ms / prev if prev else float("nan")
            rows.append([name, value, a.vectors_per_step, sps, ms, growth])
            raw.setdefault(name, []).append((a, sps))
            log(f"  curve {name}={value}: {sps:.1f} samples/s, {ms:.1f} ms/step")
            prev = ms
    for precision in ("32", "bf16-mixed"):
        sps = tt.ndvq_throughput(base, warmup=warmup, repeats=repeats, precision=precision)
        raw.setdefault("precision", []).append((precision, sps))
        rows.append(["precision", precision, base.vectors_per_step, sps, base.batch / sps * 1e3, float("nan")])
        log(f"  precision {precision}: {sps:.1f} samples/s")
    table = markdown_table(["doubling", "value", "vectors / step", "ndvq samples/s", "ms / step",
                            "step time x previous"], rows)
    return f"Base: {base.label()}, n_codes {base.n_codes:,}, n_hiddens {base.n_hiddens}.\n\n" + table, raw


def encode_section(quick: bool, threads: int, log=print) -> tuple[str, dict]:
    """Encode throughput/peak memory: the 1M x 65,536 target run and curves as vectors and codes double."""
    if quick:
        grid = [("vectors", 4096, 1024)]
        target = (8192, 1024)
    else:
        grid = [("vectors", 65536, 16384), ("vectors", 131072, 16384), ("vectors", 262144, 16384),
                ("codes", 131072, 4096), ("codes", 131072, 32768), ("codes", 131072, 65536)]
        target = (1_000_000, 65536)
    rows, raw = [], {}
    for name, n, k in grid + [("target", *target)]:
        r = enc.measure(n, k, batch=64, threads=threads)
        raw.setdefault(name, []).append(r)
        rows.append([name, f"{r['vectors']:,}", f"{k:,}", r["vectors_per_s"], r["encode_s"], r["peak_rss_mb"],
                     r["base_rss_mb"]])
        log(f"  encode {r['vectors']:,} x {k:,}: {r['vectors_per_s']:,.0f} vectors/s, peak {r['peak_rss_mb']:.0f} MB")
    table = markdown_table(["series", "vectors", "codes", "vectors/s", "encode s", "peak RSS MB",
                            "RSS before encoding MB"], rows)
    return table, raw


def quantizer_section(quick: bool) -> str:
    """The quantizer micro-benchmark of benchmarks/quantizer.py (its training-step table)."""
    from benchmarks import quantizer as qb

    table, _ = qb.train_step_table(rounds=3 if quick else 10, warmup=1 if quick else 3)
    return (f"`benchmarks.quantizer.train_step_table`: N={qb.N:,} tokens, K={qb.K:,} codes, D={qb.D}, forward + "
            f"backward + codebook update (its own page: docs/benchmarks-quantizer.md).\n\n" + table)


def targets_section(train: list[dict], encode_raw: dict, quick: bool) -> str:
    """The issue-8 targets with the measured values (2D rows of the comparison, the 1M x 65,536 encode)."""
    two = {r["n_codes"]: r for r in train if r["n_dims"] == 2}
    ks = sorted(two)
    lo, mid, hi = (ks[0], ks[len(ks) // 2], ks[-1])
    t = encode_raw["target"][0]
    drop = 1 - two[hi]["ndvq"] / two[lo]["ndvq"]

    def ok(flag: bool) -> str:
        return "met" if flag else "**not met**"

    drop_full = 1 - two[hi]["ndvq_full"] / two[lo]["ndvq_full"]
    rows = [
        [f"2D training, ndvq / reference at n_codes={lo:,}", f">= {TARGETS['ratio_512']}x",
         f"{two[lo]['ratio']:.2f}x (classic lookup: {two[lo]['ratio_full']:.2f}x)", ok(two[lo]["ratio"] >= TARGETS["ratio_512"])],
        [f"2D training, ndvq / reference at n_codes={mid:,}", f">= {TARGETS['ratio_4096']}x",
         f"{two[mid]['ratio']:.2f}x (classic lookup: {two[mid]['ratio_full']:.2f}x)", ok(two[mid]["ratio"] >= TARGETS["ratio_4096"])],
        [f"ndvq throughput drop, n_codes {lo:,} -> {hi:,}", f"<= {TARGETS['max_drop']:.0%}",
         f"{drop:.0%} (classic lookup: {drop_full:.0%})", ok(drop <= TARGETS["max_drop"])],
        [f"encode {t['vectors']:,} vectors x {t['codes']:,} codes, peak memory", f"< {TARGETS['encode_peak_mb']:.0f} MB",
         f"{t['peak_rss_mb']:.0f} MB", ok(t["peak_rss_mb"] < TARGETS["encode_peak_mb"])],
    ]
    note = "(quick run: tiny sizes, the figures say nothing about the targets)\n\n" if quick else ""
    return note + markdown_table(["target", "wanted", "measured", ""], rows)


def gpu_throughput(arch, precision: str, warmup: int, repeats: int, device: str = "cuda") -> tuple[float, float]:
    """(samples/s, peak GPU MB) of ndvq's training step on ``device`` (the step of ``make_ndvq_step``;
    ``device="cpu"`` runs the same code without the CUDA calls, for the smoke test; peak MB is then NaN)."""
    import statistics

    import torch
    from benchmarks.common import real_batch, time_calls

    from ndvq.run.optim import make_optimizer, param_groups

    torch.manual_seed(0)
    cuda = device == "cuda"
    model = tt.build_ndvq(arch).to(device).train()
    model.validate_inputs = False
    opt = make_optimizer(param_groups(model, 3e-4, 0.0), 3e-4, 0.9, 0.999)
    batches = [real_batch(arch.n_dims, arch.batch, arch.size, seed=i).to(device) for i in range(4)]
    state = {"i": 0}

    def step() -> None:
        x = batches[state["i"] % len(batches)]
        state["i"] += 1
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            out = model(x)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sec = statistics.median(time_calls(step, warmup, repeats))
    return arch.batch / sec, torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")


def gpu_section(quick: bool, warmup: int, repeats: int, log=print, device: str = "cuda") -> str:
    """The throughput suite on the GPU: every n_dims x n_codes, fp32 and bf16-mixed."""
    archs = tt.QUICK_ARCHS if quick else tt.DEFAULT_ARCHS
    rows = []
    for base in archs.values():
        for k in (64, 256) if quick else (512, 4096, 16384):
            arch = replace(base, n_codes=k)
            for precision in ("32", "bf16-mixed"):
                sps, mb = gpu_throughput(arch, precision, warmup, repeats, device)
                rows.append([arch.label(), f"{k:,}", precision, arch.vectors_per_step, sps, arch.batch / sps * 1e3, mb])
                log(f"  gpu {arch.label()}, n_codes {k}, {precision}: {sps:.1f} samples/s, peak {mb:.0f} MB")
    return markdown_table(["input", "n_codes", "precision", "vectors / step", "ndvq samples/s", "ms / step",
                           "peak GPU MB"], rows)


def run_gpu(args) -> int:
    """``--device cuda``: the GPU throughput table, or a note and exit 0 when there is no CUDA device."""
    import torch

    if not torch.cuda.is_available():
        print(f"python -m benchmarks --device cuda: no CUDA device on this machine (torch {torch.__version__}, "
              f"CUDA build: {torch.version.cuda or 'no'}); the GPU throughput suite did not run. "
              "Install a CUDA build with: bash scripts/setup.sh --cuda (docs/gpu.md)")
        return 0
    out = args.out if args.out is not None else (None if args.quick else ROOT / "docs" / "benchmarks-gpu.md")
    info = machine_info(args.threads)
    info["GPU"] = f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    start = time.perf_counter()
    print("# training throughput on the GPU", flush=True)
    table = gpu_section(args.quick, *((1, 3) if args.quick else (5, 20)))
    info["suite wall time"] = f"{time.perf_counter() - start:.0f} s"
    text = render(info, [("Training throughput on the GPU (fp32 and bf16-mixed)", table)], args)
    print(text)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text("# GPU benchmarks\n\nSee docs/gpu.md for the set-up.\n\n" + text)
        print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes and few steps (smoke run, ~1 min)")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                   help="torch intra-op threads, the same for every implementation (default: min(2, cores))")
    p.add_argument("--out", type=Path, default=None,
                   help="Markdown file to write (default: docs/benchmarks.md for a full run, none for --quick)")
    p.add_argument("--skip", default="", help="comma-separated sections to skip: train,curves,encode,quantizer")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cuda: the training-throughput suite on the GPU (writes docs/benchmarks-gpu.md; "
                        "without a CUDA device: a note and exit 0). Default cpu: the whole CPU suite")
    args = p.parse_args(argv)
    if args.device == "cuda":
        raise SystemExit(run_gpu(args))
    out = args.out if args.out is not None else (None if args.quick else ROOT / "docs" / "benchmarks.md")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    set_threads(args.threads)
    info = machine_info(args.threads)
    start = time.perf_counter()
    warmup, rounds = (1, 2) if args.quick else (3, 5)
    sections: list[tuple[str, str]] = []

    print("# training throughput: ndvq vs reference", flush=True)
    train_rows: list[dict] = []
    if "train" not in skip:
        table, train_rows = tt.comparison_table(args.quick, warmup=warmup, rounds=rounds)
        sections.append(("Training throughput: ndvq vs the reference package", table))
    if "curves" not in skip:
        print("# cost curves", flush=True)
        table, _ = cost_curves(args.quick, warmup, rounds + 2)
        sections.append(("Cost curves: ndvq training step as batch, input size and n_codes double", table))
    encode_raw: dict = {}
    if "encode" not in skip:
        print("# encode", flush=True)
        table, encode_raw = encode_section(args.quick, args.threads)
        sections.append(("Encode throughput and peak memory (`ndvq encode` path, fresh process each)", table))
    if "quantizer" not in skip:
        print("# quantizer micro-benchmark", flush=True)
        sections.append(("Quantizer micro-benchmark", quantizer_section(args.quick)))
    if train_rows and encode_raw:
        sections.insert(0, ("Targets (issue 8)", targets_section(train_rows, encode_raw, args.quick)))
    total = time.perf_counter() - start
    info["suite wall time"] = f"{total:.0f} s"

    text = render(info, sections, args)
    print(text)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists() and out.resolve() == (ROOT / "docs" / "benchmarks.md").resolve():
            text = merge_into_doc(out.read_text(), text)
        out.write_text(text)
        print(f"wrote {out} ({total:.0f} s)")


RESULTS_BEGIN, RESULTS_END = "<!-- BENCHMARK-RESULTS:BEGIN -->", "<!-- BENCHMARK-RESULTS:END -->"


def render(info: dict, sections: list[tuple[str, str]], args) -> str:
    """The results block: command, machine table and one section per benchmark."""
    cmd = ("python -m benchmarks" + (" --device cuda" if getattr(args, "device", "cpu") == "cuda" else "")
           + (" --quick" if args.quick else "") + f" --threads {args.threads}")
    lines = [RESULTS_BEGIN, "", f"Command: `{cmd}`", "", markdown_table(["machine", ""], list(info.items())), ""]
    for title, body in sections:
        lines += [f"### {title}", "", body, ""]
    lines.append(RESULTS_END)
    return "\n".join(lines) + "\n"


def merge_into_doc(doc: str, results: str) -> str:
    """Replace the results block of docs/benchmarks.md (between the markers), keeping the prose."""
    if RESULTS_BEGIN in doc and RESULTS_END in doc:
        head, _, rest = doc.partition(RESULTS_BEGIN)
        _, _, tail = rest.partition(RESULTS_END)
        return head + results.rstrip("\n") + tail
    return doc.rstrip("\n") + "\n\n" + results


if __name__ == "__main__":
    main()
