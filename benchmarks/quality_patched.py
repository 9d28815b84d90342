"""Diagnosis runs of the quality benchmark with the model patched in ways that are not ndvq options
(issue 18, docs/benchmarks-quality.md, "Fourth session"; results in
``benchmarks/results/quality-diagnosis3-epyc-2026-12-02.json``, key ``patched``).

One run of ``benchmarks.quality.train_run`` (model ``ndvq``, K=512, 1000 steps, weight average 0.99
measured beside it, 4 probes), printed as one JSON line. Patches (joined with ``+``; ``none`` for none):

- ``he``: Kaiming-normal (fan-in, ReLU) initial weights and zero biases for every convolution;
- ``scaleF``: every convolution's initial weights multiplied by ``F`` (e.g. ``scale0.5``);
- ``nsvq``: noise substitution (Vali & Baeckstroem 2022) instead of the straight-through copy in training:
  the decoder reads ``x + |q - x| * v / |v|`` with ``v`` Gaussian;
- ``qdropP_T``: each token passes unquantized with probability ``P``, decaying linearly to 0 at step ``T``.

Run (repository root, benchmark venv)::

    PYTHONPATH=src:. /work/benchvenv/bin/python -m benchmarks.quality_patched he 0 0
    ... -m benchmarks.quality_patched none 0 0 '{"quantizer": {"entropy_weight": 0.1}}'   # an option only
"""

from __future__ import annotations

import json
import sys

import benchmarks.quality as quality
import torch
from torch import nn

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _set_straight_through(rule) -> None:
    """Replace the quantizer's straight-through copy in training (grad enabled); evaluation keeps ``q``."""
    import ndvq.quantizers.vq as vq

    def copy(x, q):
        return rule(x, q) if torch.is_grad_enabled() else x + (q - x).detach()
    vq.straight_through = copy


def _quantizer_dropout(p0: float, until: int):
    """Straight-through rule passing each token unquantized with probability ``p0``, decaying linearly to
    0 at the ``until``-th training call."""
    calls = [0]

    def dropout(x, q):
        calls[0] += 1
        keep = (torch.rand(x.shape[0], 1) < p0 * max(0.0, 1 - calls[0] / until)).to(x.dtype)  # [N, 1]
        return x + ((q - x) * (1 - keep)).detach()
    return dropout


def patch(net: nn.Module, kinds: list[str]) -> None:
    """Apply the named patches (module docstring) to a freshly built ``net``."""
    convs = [m for m in net.modules() if isinstance(m, CONVS)]
    for kind in kinds:
        if kind == "he":
            for m in convs:
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        elif kind.startswith("scale"):
            with torch.no_grad():
                for m in convs:
                    m.weight.mul_(float(kind[5:]))
        elif kind == "nsvq":
            def noise(x, q):
                v = torch.randn_like(x)
                return x + (q - x).norm(dim=-1, keepdim=True).detach() * v / v.norm(dim=-1, keepdim=True)
            _set_straight_through(noise)
        elif kind.startswith("qdrop"):
            p0, until = (float(kind[5:].split("_")[0]), int(kind.split("_")[1])) if "_" in kind else (float(kind[5:]), 500)
            _set_straight_through(_quantizer_dropout(p0, until))
        else:
            raise SystemExit(f"unknown patch {kind!r}; expected he, scaleF, nsvq or qdropP_T")


def run(kinds: list[str], seed: int, order: int, overrides: dict | None = None) -> dict:
    """One patched run (K=512, 1000 steps, 4 probes, weight average 0.99)."""
    build = quality.build

    def patched_build(model, k, overrides=None):
        net, step_loss, encode_decode = build(model, k, overrides)
        patch(net, kinds)
        return net, step_loss, encode_decode
    quality.build = patched_build
    torch.set_num_threads(1)
    r = quality.train_run("ndvq", 512, seed, order, 1000, overrides={"weight_ema": 0.99, **(overrides or {})}, probes=4)
    avg = r.pop("average")
    return {"kind": "+".join(kinds), "overrides": overrides, "seed": seed, "order": order, "psnr": round(r["psnr"], 3),
            "avg": round(avg["psnr"], 3), "alive": r["alive"], "avg_alive": avg["alive"], "trace": r["trace"],
            "trace_avg": avg["trace"], "s": round(r["train_s"])}


if __name__ == "__main__":
    names = [k for k in sys.argv[1].split("+") if k and k != "none"]
    extra = json.loads(sys.argv[4]) if len(sys.argv) > 4 else None
    print(json.dumps(run(names, int(sys.argv[2]), int(sys.argv[3]), extra)), flush=True)
