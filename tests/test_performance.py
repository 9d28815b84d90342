"""Performance properties of the model and quantizer step (not timed).

- the quantizer and the model trace into one ``torch.compile`` graph (0 graph breaks), and the
  compiled model runs a training step giving the eager result;
- bf16 autocast keeps code assignment exact: the distances are computed in fp32;
- a training step of the model (forward, backward, the optimiser ``ndvq train`` uses) makes no
  host sync: no ``Tensor.item/tolist/cpu/numpy/__bool__/__float__/__int__/__index__`` and no
  data-dependent-shape op (``nonzero``, ``unique``, ``masked_select``, ``bincount``: each waits for
  the device on a GPU).

The training loop's own syncs (logging, tracker, step skipping) are covered by
``tests/train/test_loop.py::test_no_host_sync_inside_a_step``, which leaves the model and the
quantizer out; this file covers exactly those.

The speed benchmark itself is ``python -m benchmarks`` (docs/benchmarks.md); its ``--quick`` smoke
run is the last test here, marked ``benchmark`` and run only with ``NDVQ_RUN_BENCHMARKS=1``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ndvq import VQVAE
from ndvq.quantizers import build_quantizer
from ndvq.run.optim import make_optimizer, param_groups

ROOT = Path(__file__).resolve().parent.parent
SHAPES = {1: (64,), 2: (16, 16), 3: (4, 8, 8)}
QUANTIZER_KINDS = [("vq", {}), ("fsq", {"fsq_levels": [5, 5, 4]}), ("lfq", {}), ("simvq", {}),
                   ("residual", {"num_quantizers": 2, "cosine": False}), ("grouped", {"groups": 2})]


def tiny_model(n_dims: int, quantizer: dict | None = None, embedding_dim: int = 8, **kw) -> VQVAE:
    """A small VQ-VAE set up as ``ndvq train`` sets it up (no per-step host-side input check)."""
    args = dict(n_dims=n_dims, in_channels=3, n_hiddens=16, n_res_layers=1, downsample=2,
                embedding_dim=embedding_dim, n_codes=32, n_head=2, attn_type="full", quantizer=quantizer)
    args.update(kw)
    model = VQVAE(**args)
    model.validate_inputs = False
    return model


# ---------------------------------------------------------------------------------------- compile
@pytest.mark.parametrize("training", [True, False])
def test_quantizer_forward_has_no_graph_breaks(training):
    q = build_quantizer("vq", dim=16, n_codes=64).train(training)
    z = torch.randn(256, 16)
    if training:
        q(z)  # k-means init happened in eager mode; explain the steady-state step
    explained = torch._dynamo.explain(q)(z)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


@pytest.mark.parametrize("n_dims", [1, 2, 3])
def test_model_forward_has_no_graph_breaks(n_dims):
    model = tiny_model(n_dims).train()
    x = torch.randn(2, 3, *SHAPES[n_dims])
    model(x)  # k-means init
    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0, explained.break_reasons


def test_compiled_model_runs_a_training_step_like_eager():
    """``train.compile=true`` path: ``torch.compile(model)`` trains a step and matches eager.

    Uses the ``aot_eager`` backend (Dynamo capture + AOTAutograd forward/backward graphs, the parts
    that break on graph breaks, host syncs or data-dependent shapes); inductor's C++ code generation
    on top takes minutes on a busy 2-core CPU and is exercised by ``ndvq train train.compile=true``."""
    torch.manual_seed(0)
    eager = tiny_model(2, attn_dropout=0.0).train()
    compiled_net = tiny_model(2, attn_dropout=0.0).train()
    compiled_net.load_state_dict(eager.state_dict())
    x = torch.randn(4, 3, 16, 16)
    for model in (eager, compiled_net):  # k-means init, same batch and random draws (a one-off, eager)
        torch.manual_seed(1)
        model(x)
    torch.testing.assert_close(compiled_net.quantizer.embed, eager.quantizer.embed)
    compiled = torch.compile(compiled_net, backend="aot_eager", fullgraph=True)
    outs = []
    for model, fwd in ((eager, eager), (compiled_net, compiled)):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        torch.manual_seed(2)  # the same dead-code restart draws
        out = fwd(x)
        out.loss.backward()
        opt.step()
        outs.append(out)
    torch.testing.assert_close(outs[1].loss, outs[0].loss, rtol=1e-4, atol=1e-5)
    assert torch.equal(outs[1].indices, outs[0].indices)
    for (name, p), p2 in zip(eager.named_parameters(), compiled_net.parameters()):
        torch.testing.assert_close(p2, p, rtol=1e-3, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


# ---------------------------------------------------------------------------------------- bf16
def _hard_tokens(n: int = 4096, k: int = 512, d: int = 64):
    """Tokens whose nearest codes bf16 distances get wrong: codes are tiny perturbations of a
    shared large vector, so the distance gaps sit far below bf16 resolution of ``x.c``."""
    g = torch.Generator().manual_seed(0)
    center = torch.randn(d, generator=g) * 4
    codebook = center + 0.05 * torch.randn(k, d, generator=g)
    z = center + 0.05 * torch.randn(n, d, generator=g)
    return z, codebook


def _exact_nearest(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    return torch.cdist(z.double(), codebook.double()).argmin(dim=1)


def test_bf16_distances_would_change_codes():
    """The check below can fail: on these tokens a bf16 distance matmul picks other codes."""
    z, codebook = _hard_tokens()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        dots = z @ codebook.t()  # [N, K]
    assert dots.dtype == torch.bfloat16
    d = (codebook * codebook).sum(1) - 2 * dots.float()
    assert (d.argmin(1) != _exact_nearest(z, codebook)).float().mean() > 0.05


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16])
def test_bf16_autocast_code_assignment_is_exact(training, input_dtype):
    """Indices under ``torch.autocast(bfloat16)`` equal the fp32 indices of the same tokens."""
    z, codebook = _hard_tokens()
    z = z.to(input_dtype)  # bf16 tokens: what a bf16 encoder hands the quantizer

    def indices(autocast: bool) -> torch.Tensor:
        q = build_quantizer("vq", dim=64, n_codes=512, init="random", restart="none", cosine=False,
                            codebook_dim=None).train(training)  # Euclidean search in the tokens' own 64 dims
        with torch.no_grad():
            q.embed.copy_(codebook)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return q(z if autocast else z.float()).indices

    fp32, bf16 = indices(False), indices(True)
    assert torch.equal(bf16, fp32), f"{(bf16 != fp32).sum().item()} of {len(fp32)} codes differ from fp32"
    # and fp32 is the true nearest code wherever the runner-up is not within fp32 rounding
    d = torch.cdist(z.double(), codebook.double()) ** 2  # [N, K]
    top2 = d.topk(2, dim=1, largest=False).values
    clear = (top2[:, 1] - top2[:, 0]) > 1e-3
    assert clear.float().mean() > 0.9
    assert torch.equal(bf16[clear], d.argmin(dim=1)[clear])


def test_model_under_bf16_autocast_assigns_nearest_codes():
    """End to end: under autocast the encoder runs in bf16, the quantizer still picks the exact
    nearest code of whatever tokens it receives."""
    model = tiny_model(2, embedding_dim=16).eval()
    assert model.quantizer.codebook_dim == 8  # the default low-dimensional lookup: 16 -> 8 -> search
    seen = {}
    model.quantizer.project_in.register_forward_hook(lambda m, args, out: seen.update(z=out.detach().clone()))
    x = torch.randn(8, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert seen["z"].dtype == torch.bfloat16  # the projection ran under autocast
    z = seen["z"].float().reshape(-1, 8)  # [B, *L, 8] -> [N, 8]: the tokens the search receives
    want = _exact_nearest(z, model.quantizer.codebook().detach())
    assert torch.equal(out.indices.reshape(-1), want)


# ---------------------------------------------------------------------------------------- host syncs
SYNC_METHODS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__",
                "nonzero", "unique", "masked_select")
SYNC_FUNCTIONS = ("nonzero", "unique", "masked_select", "bincount")


@pytest.fixture
def sync_counter(monkeypatch):
    """Record every host-syncing call while ``state['on']``; yields (state, calls)."""
    import traceback

    state, calls = {"on": False}, []

    def wrap(orig, name):
        def spy(*a, **k):
            if state["on"]:
                frames = [f for f in traceback.extract_stack()[:-1] if "/ndvq/" in f.filename]
                where = frames[-1] if frames else traceback.extract_stack()[-2]
                calls.append(f"{name} @ {where.filename.split('src/')[-1]}:{where.lineno}")
            return orig(*a, **k)

        return spy

    for name in SYNC_METHODS:
        monkeypatch.setattr(torch.Tensor, name, wrap(getattr(torch.Tensor, name), f"Tensor.{name}"))
    for name in SYNC_FUNCTIONS:
        monkeypatch.setattr(torch, name, wrap(getattr(torch, name), f"torch.{name}"))
    return state, calls


def _step(model, opt, x):
    out = model(x)
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return out


def _count_syncs(model, x, state, warmup: int, counted: int) -> None:
    """``warmup`` training steps, then ``counted`` steps with the sync counter on."""
    model.train()
    opt = make_optimizer(param_groups(model, 1e-3, 0.0), 1e-3, 0.9, 0.99)
    for _ in range(warmup):
        _step(model, opt, x)
    state["on"] = True
    for _ in range(counted):
        _step(model, opt, x)
    state["on"] = False


@pytest.mark.parametrize("n_dims", [1, 2, 3])
def test_training_step_makes_no_host_sync(n_dims, sync_counter):
    state, calls = sync_counter
    # one-offs before counting: k-means init (step 1), reading the "initialised" flag once (step 2)
    _count_syncs(tiny_model(n_dims), torch.randn(2, 3, *SHAPES[n_dims]), state, warmup=2, counted=3)
    assert calls == [], f"host syncs in a training step: {sorted(set(calls))}"


@pytest.mark.parametrize("kind, options", QUANTIZER_KINDS, ids=[k for k, _ in QUANTIZER_KINDS])
def test_quantizer_training_step_makes_no_host_sync(kind, options, sync_counter):
    state, calls = sync_counter
    model = tiny_model(2, quantizer={"kind": kind, **options}, embedding_dim=6 if kind == "fsq" else 8)
    _count_syncs(model, torch.randn(2, 3, 16, 16), state, warmup=2, counted=2)  # warm-up: codebook initialisation
    assert calls == [], f"host syncs in a {kind} training step: {sorted(set(calls))}"


def test_input_check_is_the_only_switchable_sync(sync_counter):
    """``validate_inputs=True`` (the default outside ``ndvq train``) costs exactly one host read."""
    state, calls = sync_counter
    model = tiny_model(2).train()
    model.validate_inputs = True
    x = torch.randn(2, 3, 16, 16)
    model(x)
    model(x)
    state["on"] = True
    model(x)
    state["on"] = False
    assert len(calls) == 1 and "checks.py" in calls[0], calls


# ---------------------------------------------------------------------------------------- smoke
@pytest.mark.benchmark
@pytest.mark.skipif(not os.environ.get("NDVQ_RUN_BENCHMARKS"),
                    reason="benchmark smoke run (~30 s); set NDVQ_RUN_BENCHMARKS=1 to run it")
def test_benchmark_suite_quick_run(tmp_path):
    out = tmp_path / "bench.md"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--threads", "1", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for heading in ("Targets (issue 8)", "Training throughput", "Cost curves", "Encode throughput",
                    "Quantizer micro-benchmark"):
        assert heading in text
    assert "torch" in text and "cpu" in text
