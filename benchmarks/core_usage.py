"""Codebook usage and PSNR on held-out real image patches: ``ndvq.VQVAE`` vs the reference ``nd_vq_vae``.

Data: 32x32 RGB patches in ``[-1, 1]`` cut at random from photographs bundled with scikit-image.
Training patches come from one set of photos, test patches from *different* photos
(``TRAIN_IMAGES`` / ``TEST_IMAGES``), so the usage figure is measured on held-out content.

Both models get the same architecture (``n_hiddens``, ``n_res_layers``, ``downsample=4x4``,
``embedding_dim``, ``n_codes``, ``codebook_beta``), the same batches in the same order, the same
number of steps and the same optimiser (Adam, same learning rate). Each keeps its own defaults
for what the reference hard-codes: the reference always runs full attention (2 heads, attention
dropout 0.1, on its channels-first layout) and scales its MSE by ``1/0.06``; ndvq runs its
defaults (axial attention, 2 heads, no dropout, ``recon_loss_factor=1``) and its default quantizer
(EMA, k-means init, dead-code restart). Loss of the reference = ``recon_loss + commitment_loss``
as its ``training_step`` computes it.

Metrics on the test patches, model in eval mode: ``usage`` = fraction of the ``n_codes`` codes
chosen at least once over all test patches, ``perplexity`` of that code distribution, and PSNR
(mean over patches of ``10 log10(2^2 / mse)``, reconstructions clamped to ``[-1, 1]``).

The two models train in two separate processes, one thread each, at the same time. The reference
runs in a separate virtual environment that has ``nd_vq_vae`` installed (found automatically in
``/work/benchvenv`` (made as ``benchmarks/requirements.txt`` says), ``/work/refvenv`` or ``/work/perfvenv``, or given with ``--reference-python``); it is never an ndvq
dependency.

Run: ``python benchmarks/core_usage.py`` (``--steps 1000 --n-codes 512`` by default;
``--quick`` for a 50-step smoke run; ``--no-reference --quantizer '{"entropy_weight": 0.1}'`` or
``--ndvq-args '{"recon_loss_factor": 16.67}'`` to try ndvq variants; ``--seeds`` lists the seeds (patches,
batch order and initialisation; default 0 1 2), ``--doc docs/benchmarks-core.md`` writes the results page).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN_IMAGES = ("astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
TEST_IMAGES = ("chelsea", "motorcycle")
REFERENCE_PYTHONS = ("/work/benchvenv/bin/python", "/work/refvenv/bin/python", "/work/perfvenv/bin/python")


# ----------------------------------------------------------------------------------- data
def _photo(name: str):
    import numpy as np
    from skimage import data

    img = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    return np.asarray(img, dtype=np.float32)[..., :3] / 127.5 - 1.0  # [H, W, 3] in [-1, 1]


def make_patches(names, n: int, size: int, seed: int):
    """``n`` random ``size x size`` RGB patches ``[n, 3, size, size]`` spread evenly over the photos ``names``."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, size, size), dtype=np.float32)
    photos = [_photo(name) for name in names]
    for i in range(n):
        img = photos[i % len(photos)]
        r = rng.integers(0, img.shape[0] - size + 1)
        c = rng.integers(0, img.shape[1] - size + 1)
        out[i] = img[r:r + size, c:c + size].transpose(2, 0, 1)
    return torch.from_numpy(out)


# ----------------------------------------------------------------------------------- workers
def _build(which: str, a: dict):
    import torch

    if which == "ndvq":
        from ndvq import VQVAE

        model = VQVAE(n_dims=2, in_channels=3, n_hiddens=a["n_hiddens"], n_res_layers=a["n_res_layers"],
                      downsample=(4, 4), embedding_dim=a["embedding_dim"], n_codes=a["n_codes"],
                      codebook_beta=a["beta"], quantizer=a["quantizer"],
                      **{"norm": "batch", **a["ndvq_args"]})  # the reference's norm (ndvq's default is "channel")
        model.validate_inputs = False  # the training loop's setting (no host sync per step)

        def step_loss(x):
            out = model(x)
            return out.loss, out.usage

        def encode_decode(x):
            out = model(x)
            return out.reconstruction, out.indices
    else:
        from nd_vq_vae import NDimVQVAE

        model = NDimVQVAE(embedding_dim=a["embedding_dim"], n_codes=a["n_codes"], n_dims=2, downsample=[4, 4],
                          n_hiddens=a["n_hiddens"], n_res_layers=a["n_res_layers"], codebook_beta=a["beta"],
                          input_shape=[3, a["size"], a["size"]])

        def step_loss(x):
            recon_loss, _, vq = model(x)  # its training_step: recon_loss + commitment_loss
            usage = (torch.bincount(vq["encodings"].flatten(), minlength=a["n_codes"]) > 0).float().mean()
            return recon_loss + vq["commitment_loss"], usage

        def encode_decode(x):
            _, recon, vq = model(x)
            return recon, vq["encodings"]
    return model, step_loss, encode_decode


def worker(which: str, data_path: str, out_path: str) -> None:
    """Train one model on the shared batches and write its metrics as JSON to ``out_path``."""
    import torch

    torch.set_num_threads(1)
    blob = torch.load(data_path, weights_only=True)
    a = json.loads(blob["args"])
    train, test, order = blob["train"], blob["test"], blob["order"]
    torch.manual_seed(a["seed"])
    model, step_loss, encode_decode = _build(which, a)
    opt = torch.optim.Adam(model.parameters(), lr=a["lr"], betas=(0.9, 0.999))
    model.train()
    usages, t0 = [], time.perf_counter()
    for step in range(order.shape[0]):
        loss, usage = step_loss(train[order[step]])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        usages.append(float(usage))
        if (step + 1) % max(1, order.shape[0] // 10) == 0:
            print(f"[{which}] step {step + 1}/{order.shape[0]} loss {float(loss.detach()):.4f} "
                  f"batch usage {float(usage):.3f}", file=sys.stderr, flush=True)
    train_time = time.perf_counter() - t0
    model.eval()
    counts = torch.zeros(a["n_codes"])
    psnrs = []
    with torch.no_grad():
        for i in range(0, len(test), 256):
            x = test[i:i + 256]
            recon, codes = encode_decode(x)
            counts += torch.bincount(codes.flatten(), minlength=a["n_codes"]).float()
            mse = ((recon.clamp(-1, 1) - x) ** 2).flatten(1).mean(1).clamp_min(1e-10)
            psnrs.append(10 * torch.log10(4.0 / mse))
    p = counts / counts.sum()
    perplexity = float(torch.exp(-(p * p.clamp_min(1e-12).log()).sum()))
    result = {
        "model": which, "test_usage": float((counts > 0).float().mean()), "test_perplexity": perplexity,
        "test_psnr": float(torch.cat(psnrs).mean()), "train_batch_usage_last100": sum(usages[-100:]) / len(usages[-100:]),
        "sec_per_step": train_time / order.shape[0], "steps": int(order.shape[0]),
    }
    Path(out_path).write_text(json.dumps(result))


# ----------------------------------------------------------------------------------- driver
def find_reference_python(explicit: str | None) -> str | None:
    """An interpreter that can ``import nd_vq_vae`` (the explicit one, else a known scratch venv)."""
    for py in ([explicit] if explicit else REFERENCE_PYTHONS):
        if py and Path(py).exists():
            ok = subprocess.run([py, "-c", "import nd_vq_vae"], capture_output=True, timeout=300).returncode == 0
            if ok:
                return py
    return None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--n-codes", type=int, default=512)
    p.add_argument("--n-hiddens", type=int, default=64)
    p.add_argument("--n-res-layers", type=int, default=2)
    p.add_argument("--embedding-dim", type=int, default=64)
    p.add_argument("--beta", type=float, default=0.25)
    p.add_argument("--train-patches", type=int, default=8192)
    p.add_argument("--test-patches", type=int, default=2048)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="one run per seed (patches, batch order, initialisation); default 0 1 2")
    p.add_argument("--quantizer", type=json.loads, default=None,
                   help='ndvq quantizer options as JSON, e.g. \'{"entropy_weight": 0.1}\' (default: ndvq defaults)')
    p.add_argument("--ndvq-args", type=json.loads, default={},
                   help='further ndvq.VQVAE arguments as JSON, e.g. \'{"recon_loss_factor": 16.7}\'')
    p.add_argument("--reference-python", default=None, help="interpreter with nd_vq_vae installed")
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--quick", action="store_true", help="50 steps, for a smoke test")
    p.add_argument("--out", default=None, help="also write the results (JSON) here")
    p.add_argument("--doc", default=None, help="also write the Markdown results page here (e.g. docs/benchmarks-core.md)")
    p.add_argument("--worker", choices=["ndvq", "reference"], help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.data, args.result)
        return

    import torch

    if args.quick:
        args.steps = 50
    ref_py = None if args.no_reference else find_reference_python(args.reference_python)
    if not args.no_reference and ref_py is None:
        print("reference package nd_vq_vae not found in a scratch venv; running ndvq only", file=sys.stderr)
    started, t0, load = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), time.time(), os.getloadavg()
    per_seed = {seed: run_seed(args, seed, ref_py) for seed in args.seeds}

    lines = [f"32x32 RGB patches: {args.train_patches} train from {', '.join(TRAIN_IMAGES)}; "
             f"{args.test_patches} held-out test from {', '.join(TEST_IMAGES)}.",
             f"{args.steps} steps, batch {args.batch}, Adam lr {args.lr}, n_codes {args.n_codes}, "
             f"n_hiddens {args.n_hiddens}, n_res_layers {args.n_res_layers}, embedding_dim {args.embedding_dim}, "
             f"beta {args.beta}, ndvq quantizer {args.quantizer or 'default'}, ndvq args {args.ndvq_args}, "
             f"downsample 4x4, torch {torch.__version__}, 1 thread per model; seeds {args.seeds}.",
             f"Date {started}, {os.cpu_count()} cores, load average at start "
             f"{', '.join(f'{x:.2f}' for x in load)}, wall time {time.time() - t0:.0f} s.", "",
             "| model | seed | test usage | test perplexity | test PSNR (dB) | train batch usage (last 100) | s/step |",
             "|---|---|---|---|---|---|---|"]
    names = {"ndvq": "ndvq.VQVAE", "reference": "nd_vq_vae.NDimVQVAE 1.0.3"}
    for which in names:
        rows = [(seed, res[which]) for seed, res in per_seed.items() if which in res]
        for seed, r in rows:
            lines.append(f"| {names[which]} | {seed} | {r['test_usage']:.1%} | {r['test_perplexity']:.1f} | "
                         f"{r['test_psnr']:.2f} | {r['train_batch_usage_last100']:.1%} | {r['sec_per_step']:.3f} |")
        if len(rows) > 1:
            mean = {k: sum(r[k] for _, r in rows) / len(rows) for k in
                    ("test_usage", "test_perplexity", "test_psnr", "train_batch_usage_last100", "sec_per_step")}
            lo = min(r["test_usage"] for _, r in rows)
            lines.append(f"| **{names[which]}** | **mean** | **{mean['test_usage']:.1%}** (min {lo:.1%}) | "
                         f"{mean['test_perplexity']:.1f} | **{mean['test_psnr']:.2f}** | "
                         f"{mean['train_batch_usage_last100']:.1%} | {mean['sec_per_step']:.3f} |")
    usages = [res["ndvq"]["test_usage"] for res in per_seed.values()]
    verdict = (f"ndvq held-out usage >= 90% (issue 2 target): mean {sum(usages) / len(usages):.1%}, "
               f"min {min(usages):.1%} over {len(usages)} seed(s): "
               f"{'met' if min(usages) >= 0.9 else ('met on average' if sum(usages) / len(usages) >= 0.9 else 'NOT met')}")
    lines += ["", verdict]
    print("\n" + "\n".join(lines))
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": per_seed}, indent=2))
    if args.doc:
        cmd = "python benchmarks/core_usage.py" + ("" if args.seeds == [0, 1, 2] else f" --seeds {' '.join(map(str, args.seeds))}")
        Path(args.doc).write_text(
            "# Codebook usage on held-out patches: ndvq vs the reference package\n\n"
            f"Produced by `{cmd}` (see the module docstring of `benchmarks/core_usage.py` for the method: "
            "same architecture, batches, steps and optimiser for both; usage = fraction of the codebook "
            "chosen at least once over the held-out photographs' patches, model in eval mode).\n\n"
            + "\n".join(lines) + "\n")
    if not all(math.isfinite(res["ndvq"]["test_psnr"]) for res in per_seed.values()):
        raise SystemExit("ndvq produced a non-finite PSNR")


def run_seed(args, seed: int, ref_py: str | None) -> dict:
    """Train ndvq (and the reference, when ``ref_py``) on one seed's patches; their result dicts by name."""
    import torch

    size = 32
    cfg = dict(n_codes=args.n_codes, n_hiddens=args.n_hiddens, n_res_layers=args.n_res_layers,
               embedding_dim=args.embedding_dim, beta=args.beta, lr=args.lr, seed=seed, size=size,
               quantizer=args.quantizer, ndvq_args=args.ndvq_args)
    train = make_patches(TRAIN_IMAGES, args.train_patches, size, seed)
    test = make_patches(TEST_IMAGES, args.test_patches, size, seed + 1)
    g = torch.Generator().manual_seed(seed)
    order = torch.randint(0, len(train), (args.steps, args.batch), generator=g)  # [steps, batch] patch ids
    with tempfile.TemporaryDirectory() as tmp:
        data_path = os.path.join(tmp, "data.pt")
        torch.save({"train": train, "test": test, "order": order, "args": json.dumps(cfg)}, data_path)
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
        jobs = {"ndvq": sys.executable}
        if ref_py:
            jobs["reference"] = ref_py
        procs = {}
        for which, py in jobs.items():  # the two models train at the same time, one thread each
            res = os.path.join(tmp, f"{which}.json")
            cmd = [py, str(Path(__file__).resolve()), "--worker", which, "--data", data_path, "--result", res]
            procs[which] = (subprocess.Popen(cmd, env=env if which == "ndvq" else {**os.environ, "OMP_NUM_THREADS": "1"}), res)
        results = {}
        for which, (proc, res) in procs.items():
            if proc.wait() != 0:
                raise SystemExit(f"{which} worker failed with exit code {proc.returncode}")
            results[which] = json.loads(Path(res).read_text())
    return results

if __name__ == "__main__":
    main()
