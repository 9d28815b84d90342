"""Training throughput (samples/s) of ``ndvq.VQVAE`` against the reference ``nd_vq_vae.NDimVQVAE``.

Both run a full training step on the same batches: forward, backward, optimiser step (each its own:
the reference's ``configure_optimizers()`` Adam, ndvq's ``make_optimizer`` AdamW as ``ndvq train``
builds it, fused where supported; no gradient clipping in either) and the EMA codebook update that
each does inside its forward. The
architecture is the same: ``n_hiddens``, ``n_res_layers``, ``downsample``, ``embedding_dim``,
``n_codes``, batch norm, and full self-attention with 2 heads and attention dropout 0.1 in every
residual block. The reference has no switch for attention (it is always on, ``n_head=2``,
``attn_type="full"``) and always reads 3 input channels, so the comparison is attention-on with
3-channel inputs; ndvq runs with ``attn_type="full", n_head=2, attn_dropout=0.1``.

The reference's ``training_step`` is called outside a Lightning ``Trainer`` (its ``self.log`` calls
are then no-ops and it has no logger, so its every-100-steps extra forward for sample images never
runs: the comparison is of the model step alone, which favours the reference).

Each row also gives ndvq's FLOPs per step (``torch.utils.flop_counter``, forward + backward) as a share
of this machine's fp32 GEMM rate, timed in the same interleaved rounds (``benchmarks/machine_limit.py``).

Run alone: ``python -m benchmarks.train_throughput [--quick]``.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch
from benchmarks import machine_limit as ml
from benchmarks.common import interleaved_medians, markdown_table, real_batch, set_threads

__all__ = ["Arch", "make_ndvq_step", "make_reference_step", "compare", "ndvq_throughput",
           "reference_available", "DEFAULT_ARCHS", "QUICK_ARCHS", "build_ndvq"]


@dataclass(frozen=True)
class Arch:
    """One benchmark configuration (both models are built from it).

    Attributes:
        n_dims: spatial dimensions (1, 2, 3).
        size: input side length (each spatial axis).
        batch: samples per step.
        n_codes: codebook size.
        n_hiddens: hidden channels. Default 64.
        n_res_layers: attention residual blocks in encoder and decoder. Default 2.
        downsample: downsampling factor per axis (same on every axis). Default 4.
        embedding_dim: code vector size. Default 64.
    """

    n_dims: int
    size: int
    batch: int
    n_codes: int
    n_hiddens: int = 64
    n_res_layers: int = 2
    downsample: int = 4
    embedding_dim: int = 64

    @property
    def vectors_per_step(self) -> int:
        """Latent vectors quantized per step (batch x latent positions)."""
        return self.batch * (self.size // self.downsample) ** self.n_dims

    def label(self) -> str:
        shape = "x".join([str(self.size)] * self.n_dims)
        return f"{self.n_dims}D {shape}, batch {self.batch}"


# 1D: 3 x 512 series (128 latent positions), 2D: 32x32 RGB patches (8x8), 3D: 16^3 clips (4^3).
DEFAULT_ARCHS = {1: Arch(1, 512, 32, 512), 2: Arch(2, 32, 32, 512), 3: Arch(3, 16, 8, 512)}
#: Tiny versions for ``--quick`` (smoke runs).
QUICK_ARCHS = {1: Arch(1, 64, 4, 64, n_hiddens=16, embedding_dim=16),
               2: Arch(2, 16, 4, 64, n_hiddens=16, embedding_dim=16),
               3: Arch(3, 8, 2, 64, n_hiddens=16, embedding_dim=16)}

StepFn = Callable[[], None]


def _batches(arch: Arch, n: int = 4) -> list[torch.Tensor]:
    return [real_batch(arch.n_dims, arch.batch, arch.size, seed=i) for i in range(n)]


def reference_available() -> bool:
    """True when the reference package (``nd_vq_vae``) can be imported."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import nd_vq_vae  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not installed here"
        return False
    return True


def make_reference_step(arch: Arch, batches: list[torch.Tensor], seed: int = 0) -> StepFn:
    """A closure doing one full training step of the reference ``NDimVQVAE``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nd_vq_vae import NDimVQVAE

    torch.manual_seed(seed)
    model = NDimVQVAE(
        embedding_dim=arch.embedding_dim, n_codes=arch.n_codes, n_dims=arch.n_dims,
        downsample=[arch.downsample] * arch.n_dims, n_hiddens=arch.n_hiddens,
        n_res_layers=arch.n_res_layers, codebook_beta=0.25, input_shape=[arch.size] * arch.n_dims,
    ).train()
    opt = model.configure_optimizers()  # its own optimiser: Adam(lr=1e-4)
    state = {"i": 0}

    def step() -> None:
        x = batches[state["i"] % len(batches)]
        state["i"] += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # self.log outside a Trainer warns every call
            loss = model.training_step({"data": x}, state["i"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


FULL_DIM = {"codebook_dim": None, "cosine": False}  # ndvq's quantizer with the classic lookup: Euclidean, in embedding_dim


def build_ndvq(arch: Arch, **overrides) -> torch.nn.Module:
    """``ndvq.VQVAE`` at the same architecture as the reference (attention: full, 2 heads, dropout 0.1)."""
    from ndvq import VQVAE

    kwargs = dict(
        n_dims=arch.n_dims, in_channels=3, n_hiddens=arch.n_hiddens, n_res_layers=arch.n_res_layers,
        downsample=(arch.downsample,) * arch.n_dims, embedding_dim=arch.embedding_dim,
        n_codes=arch.n_codes, codebook_beta=0.25, n_head=2, attn_type="full", attn_dropout=0.1,
        norm="batch",
    )
    kwargs.update(overrides)
    return VQVAE(**kwargs)


def make_ndvq_step(arch: Arch, batches: list[torch.Tensor], seed: int = 0, compile: bool = False,
                   precision: str = "32", **overrides) -> StepFn:
    """A closure doing one full training step of ``ndvq.VQVAE`` (the same step as the reference's).

    The model is set up as ``ndvq train`` sets it up (``validate_inputs=False``: no per-step NaN
    check on the host). ``compile=True`` wraps it in ``torch.compile`` (as ``train.compile=true``
    does); ``precision="bf16-mixed"`` runs forward and loss under ``torch.autocast(bfloat16)``.
    """
    if precision not in ("32", "bf16-mixed"):
        raise ValueError(f"precision must be '32' or 'bf16-mixed', got {precision!r}")
    from ndvq.run.optim import make_optimizer, param_groups

    torch.manual_seed(seed)
    model = build_ndvq(arch, **overrides).train()
    model.validate_inputs = False
    opt = make_optimizer(param_groups(model, 3e-4, 0.0), 3e-4, 0.9, 0.999)  # the optimiser of `ndvq train`
    fwd = torch.compile(model) if compile else model
    state = {"i": 0}

    def step() -> None:
        x = batches[state["i"] % len(batches)]
        state["i"] += 1
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            out = fwd(x)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    return step


def compare(arch: Arch, warmup: int = 3, rounds: int = 5, calls_per_round: int = 2,
            with_reference: bool = True) -> dict:
    """Samples/s of ndvq and (when installed) the reference, timed in interleaved rounds.

    Returns a dict with the architecture's fields, ``ndvq`` and ``reference`` (samples/s; NaN
    when the reference is not installed), ``ratio`` (ndvq / reference), ``gflop_per_step`` (ndvq's
    step, ``torch.utils.flop_counter``), ``gemm_gflops`` (this machine's fp32 GEMM rate, timed in the
    same rounds) and ``share`` (ndvq's FLOP rate / the GEMM rate).
    """
    batches = _batches(arch)
    fns = {"ndvq": make_ndvq_step(arch, batches),  # ndvq's default quantizer: 8-dim code lookup
           "ndvq_full": make_ndvq_step(arch, batches, quantizer=FULL_DIM)}  # the classic lookup, as the reference
    if with_reference and reference_available():
        fns["reference"] = make_reference_step(arch, batches)
    flops = ml.step_flops(fns["ndvq"])  # one step (an extra warm-up call)
    fns["gemm"], gemm_flops = ml.gemm_call()  # the machine's ceiling, timed in the same rounds
    sec = interleaved_medians(fns, warmup=warmup, rounds=rounds, calls_per_round=calls_per_round)
    ndvq, full = arch.batch / sec["ndvq"], arch.batch / sec["ndvq_full"]
    ref = arch.batch / sec["reference"] if "reference" in sec else float("nan")
    rate = gemm_flops / sec["gemm"] / 1e9
    return {**asdict(arch), "ndvq": ndvq, "ndvq_full": full, "reference": ref, "ratio": ndvq / ref,
            "ratio_full": full / ref, "gflop_per_step": flops / 1e9, "gemm_gflops": rate,
            "share": flops / sec["ndvq"] / 1e9 / rate}


def ndvq_throughput(arch: Arch, warmup: int = 3, repeats: int = 7, **step_options) -> float:
    """Samples/s of ndvq alone (median of ``repeats`` timed steps after ``warmup``).

    ``step_options`` go to :func:`make_ndvq_step` (``compile``, ``precision``, model overrides).
    """
    fns = {"ndvq": make_ndvq_step(arch, _batches(arch), **step_options)}
    return arch.batch / interleaved_medians(fns, warmup=warmup, rounds=repeats)["ndvq"]


def comparison_table(quick: bool = False, dims=(1, 2, 3), codes=None, warmup: int = 3, rounds: int = 5,
                     log=print) -> tuple[str, list[dict]]:
    """Reference vs ndvq for each ``n_dims`` and ``n_codes``; returns (Markdown table, raw rows)."""
    archs = QUICK_ARCHS if quick else DEFAULT_ARCHS
    codes = codes or ((64, 256) if quick else (512, 4096, 16384))
    results = []
    rows = []
    for n_dims in dims:
        for k in codes:
            arch = replace(archs[n_dims], n_codes=k)
            r = compare(arch, warmup=warmup, rounds=rounds)
            results.append(r)
            rows.append([arch.label(), f"{k:,}", arch.vectors_per_step, r["reference"], r["ndvq"], r["ratio"],
                         r["ndvq_full"], r["ratio_full"], r["gflop_per_step"], r["gemm_gflops"], f"{r['share']:.0%}"])
            log(f"  train {arch.label()}, n_codes {k}: reference {r['reference']:.1f}, ndvq {r['ndvq']:.1f} "
                f"(x{r['ratio']:.2f}), ndvq classic lookup {r['ndvq_full']:.1f} (x{r['ratio_full']:.2f}) samples/s; "
                f"ndvq {r['gflop_per_step']:.2f} GFLOP/step = {r['share']:.0%} of GEMM {r['gemm_gflops']:.0f} GFLOP/s")
    table = markdown_table(["input", "n_codes", "vectors / step", "reference samples/s", "ndvq samples/s",
                            "ndvq / reference", "ndvq classic lookup samples/s", "classic / reference",
                            "ndvq GFLOP / step", "GEMM GFLOP/s", "ndvq share of GEMM"], rows)
    return table, results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, few steps")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    set_threads(args.threads)
    table, _ = comparison_table(args.quick, warmup=1 if args.quick else 3, rounds=2 if args.quick else 5)
    print(table)


if __name__ == "__main__":
    main()
