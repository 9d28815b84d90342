"""Model quality on held-out photographs: ndvq vs the reference ``nd_vq_vae``, over seeds and batch orders.

Writes docs/benchmarks-quality.md (issue 18). Every tokenizer trains on the same real 32x32 RGB patches
(``benchmarks.core_usage.TRAIN_IMAGES``, 8192 patches) with Adam (lr 3e-4, batch 32) for ``--steps``
steps, once per (initial seed, batch order, K): the initial seed sets the weights (and the quantizer's
own random draws), the batch order sets which patches each step sees. Models (``--models``):

- ``ndvq``: ``ndvq.VQVAE`` defaults with ``n_hiddens=64, n_res_layers=2, embedding_dim=64,
  downsample=[4, 4]`` (VideoGPT backbone, axial attention, the default EMA vector quantizer, the default
  norm: channel norm since 2026-12-03, batch norm - the reference's layer - before; every run of the
  VideoGPT models records its norm and the tables keep the two apart);
- ``reference``: ``nd_vq_vae.NDimVQVAE`` 1.0.3 at the same sizes (its own loss: MSE / 0.06 +
  commitment), found in the benchmark venv (``/work/benchvenv``, never an ndvq dependency);
- ``ldm-vq``: ndvq's LDM backbone (``channels=[64, 128, 128]``, one residual block per level, no
  attention) with the same default vector quantizer;
- ``fsq``: ``ndvq.VQVAE`` as ``ndvq`` with an FSQ bottleneck of exactly K codes (``FSQ_LEVELS``);
- ``continuous``: the ceiling of any bottleneck on this backbone and budget - the backbone of the ``ndvq``
  model built with the same seed (the same initial weights), its decoder reading the encoder's latent
  unquantized (no codes: alive and usage are n/a; K only files the run beside the others).

Metrics (model in eval mode): held-out PSNR (dB, of the MSE pooled over all patches, data range 2; the
mean of per-patch PSNRs is stored too) and SSIM on 2048
patches of two photographs never trained on (``TEST_IMAGES``: chelsea, motorcycle); codes alive = share
of the K codes chosen at least once on ``128 * K / 64`` fresh crops of the training photographs (>= 128
tokens per code, new positions); usage = the same share on the held-out patches.

Run (2 processes of 1 thread each, ``nice -n 10`` on a shared machine)::

    PYTHONPATH=src:. /work/benchvenv/bin/python -m benchmarks.quality --weight-average 0.99   # K=512, 5 x 2
    ... -m benchmarks.quality --ks 4096 16384 --orders 0 1 2 --seeds 0 --steps 500
    ... -m benchmarks.quality --models ldm-vq fsq

``--weight-average 0.99`` also measures a moving average of each run's weights: ``ndvq train``'s default
(``train.lr_schedule=constant``, ``train.weight_ema=0.99``) delivers that average; ``--variant "cosine to
0.1x" --overrides '{"lr_schedule": "cosine", "min_lr_ratio": 0.1, "warmup_steps": 50}'`` is the previous
default's decaying rate.
    ... -m benchmarks.quality --quick                                                 # smoke run

Results are merged into ``benchmarks/results/quality.json`` (one entry per run, naming the CPU that ran it:
floating-point results differ between CPUs, so the per-run table shows it), and the page is rebuilt from all
of them.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
import warnings
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch
import torch.nn.functional as F
from benchmarks.common import ROOT, machine_info, markdown_table, set_threads
from benchmarks.core_usage import TEST_IMAGES, TRAIN_IMAGES, make_patches

ARCH = dict(n_hiddens=64, n_res_layers=2, embedding_dim=64)
FSQ_LEVELS = {512: [8, 8, 8], 4096: [8, 8, 8, 8], 16384: [8, 8, 8, 8, 4]}
LDM = dict(channels=[64, 128, 128], num_res_blocks=1, attention_levels=[False, False, False],
           with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)
MODELS = ("ndvq", "reference", "ldm-vq", "fsq", "continuous")
NORM_MODELS = ("ndvq", "fsq", "continuous")  # built on ndvq.VQVAE's VideoGPT backbone: each run records its norm
LABELS = {"ndvq": "ndvq VQVAE (VideoGPT + VQ)", "reference": "nd_vq_vae 1.0.3", "ldm-vq": "ndvq LDM + VQ",
          "fsq": "ndvq VQVAE + FSQ", "continuous": "ndvq VideoGPT, no bottleneck (ceiling)"}
TRAIN_PATCHES, TEST_PATCHES, TOKENS_PER_PATCH = 8192, 2048, 64
RESULTS = ROOT / "benchmarks" / "results" / "quality.json"
DOC = ROOT / "docs" / "benchmarks-quality.md"
NOTES_MARK = "<!-- findings: written by hand, kept when the page is rebuilt -->"


# ----------------------------------------------------------------------------------- models
class Continuous(torch.nn.Module):
    """A backbone whose decoder reads the encoder's latent unquantized: ``x -> decode(encode(x))``.

    Args:
        backbone: an ``ndvq`` backbone (``encode`` / ``decode``).
    """

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.decode(self.backbone.encode(x))


def build(model: str, k: int, overrides: dict | None = None):
    """``(module, step_loss(x) -> loss, encode_decode(x) -> (reconstruction, codes))`` for one tokenizer.

    Args:
        model: one of :data:`MODELS`.
        k: codebook size.
        overrides: extra ``ndvq.VQVAE`` arguments (``quantizer`` entries merge into the default's). Default None.
    """
    overrides = dict(overrides or {})
    if model == "reference":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from nd_vq_vae import NDimVQVAE
        net = NDimVQVAE(embedding_dim=ARCH["embedding_dim"], n_codes=k, n_dims=2, downsample=[4, 4],
                        n_hiddens=ARCH["n_hiddens"], n_res_layers=ARCH["n_res_layers"],
                        codebook_beta=overrides.get("codebook_beta", OLD_BETA), input_shape=[3, 32, 32])

        def step_loss(x):
            recon_loss, _, vq = net(x)  # its training_step: recon_loss + commitment_loss
            return recon_loss + vq["commitment_loss"]

        return net, step_loss, _closure(model, net)
    from ndvq import VQVAE
    from ndvq.models import Autoencoder

    quantizer = dict(overrides.pop("quantizer", None) or {})
    if model == "fsq":
        quantizer = {"kind": "fsq", "fsq_levels": FSQ_LEVELS[k], **quantizer}
    if model == "continuous":  # the ndvq model's backbone, same seed, same initial weights
        net = Continuous(build("ndvq", k, overrides)[0].backbone)
        return net, lambda x: F.mse_loss(net(x), x), _closure(model, net)
    if model == "ldm-vq":
        net = Autoencoder(n_dims=2, in_channels=3, backbone="ldm", bottleneck="vq", embedding_dim=ARCH["embedding_dim"],
                          n_codes=k, ldm={**LDM, **overrides.pop("ldm", {})}, quantizer=quantizer or None)
    else:
        net = VQVAE(n_dims=2, in_channels=3, n_hiddens=ARCH["n_hiddens"], n_res_layers=ARCH["n_res_layers"],
                    downsample=(4, 4), embedding_dim=ARCH["embedding_dim"], n_codes=k,
                    quantizer=quantizer or None, **overrides)
    net.validate_inputs = False  # the training loop's setting

    def step_loss(x):
        out = net(x)
        return F.mse_loss(out.reconstruction, x) + out.aux_loss

    return net, step_loss, _closure(model, net)


# ----------------------------------------------------------------------------------- data and metrics
_DATA: dict[str, torch.Tensor] = {}


def data(quick: bool = False) -> dict[str, torch.Tensor]:
    """Training, held-out and fresh-crop patches (cached per process)."""
    if not _DATA:
        n_train, n_test = (512, 256) if quick else (TRAIN_PATCHES, TEST_PATCHES)
        _DATA.update(train=make_patches(TRAIN_IMAGES, n_train, 32, 0), test=make_patches(TEST_IMAGES, n_test, 32, 1))
    return _DATA


def fresh_crops(k: int, quick: bool = False) -> torch.Tensor:
    """New crops of the training photographs: ``128 * k / 64`` of them, >= 128 tokens per code."""
    n = 64 if quick else math.ceil(128 * k / TOKENS_PER_PATCH)
    return make_patches(TRAIN_IMAGES, n, 32, 999)


@torch.no_grad()
def evaluate(encode_decode, x: torch.Tensor, k: int, with_ssim: bool = True, chunk: int = 256) -> dict:
    """PSNR (dB) of the pooled MSE and mean per-patch PSNR, SSIM, and the share of the ``k`` codes used
    on ``x`` (model already in eval mode; NaN for a model without codes, whose ``encode_decode`` returns
    None as the codes)."""
    from ndvq.metrics import ssim

    counts, mses, ssims, has_codes = torch.zeros(k), [], [], True
    for part in x.split(chunk):
        recon, codes = encode_decode(part)
        has_codes = codes is not None
        recon = recon.clamp(-1, 1)
        if has_codes:
            counts += torch.bincount(codes.flatten().long(), minlength=k).float()[:k]
        mses.append(((recon - part) ** 2).flatten(1).mean(1).clamp_min(1e-10))  # [B]
        if with_ssim:
            ssims.append(ssim(part, recon, data_range=2.0))
    mse = torch.cat(mses)
    return {"psnr": float(10 * torch.log10(4.0 / mse.mean())),  # of the pooled MSE (data range 2)
            "psnr_patch": float((10 * torch.log10(4.0 / mse)).mean()),  # mean of per-patch PSNRs
            "ssim": float(torch.cat(ssims).mean()) if ssims else float("nan"),
            "used": float((counts > 0).float().mean()) if has_codes else float("nan")}


def recalibrated(net: torch.nn.Module, x: torch.Tensor, chunk: int = 256) -> torch.nn.Module:
    """A copy of ``net`` whose batch-norm running statistics are re-estimated on ``x`` (exact averages,
    weights and codebook untouched): separates running-statistics error from the weights' quality."""
    net = copy.deepcopy(net).eval()
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.train()
    with torch.no_grad():
        for part in x.split(chunk):  # only the norms are in train mode: the codebook does not move
            net(part)
    for m in norms:
        m.eval()
    return net


def _has_batch_norm(net: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


def _due_restarts(net) -> torch.Tensor | None:
    """``[K]`` mask of the codes the default vector quantizer re-seeds at its next training step (None for
    other bottlenecks and the reference)."""
    q = getattr(getattr(net, "bottleneck", None), "quantizer", None)
    if q is None or getattr(q, "restart", "none") == "none" or not hasattr(q, "_dead_threshold"):
        return None
    due = (q.step % q.restart_interval == 0) & q.initialised & q.has_candidates
    return q.active & (q.cluster_size < q._dead_threshold(q.cluster_size, q.active)) & due


# ----------------------------------------------------------------------------------- one run
def _train(net, step_loss, encode_decode, batches, test: torch.Tensor, k: int, probes: int,
           restarts_until: int | None, lr_schedule: str = "constant", weight_ema: float | None = None,
           min_lr_ratio: float = 0.0, warmup_steps: int = 0) -> dict:
    """Adam (lr 3e-4) over ``batches`` (an iterator of ``[32, 3, 32, 32]``); held-out PSNR at ``probes``
    evenly spaced steps; the step at which each code was last re-seeded (default vector quantizer).

    ``lr_schedule="cosine"`` decays the learning rate from 3e-4 to ``min_lr_ratio`` times that over the steps
    after ``warmup_steps`` of linear warm-up (``ndvq.run.optim``'s rule; the shipped configs use a 0.1 floor
    and 50 warm-up steps); ``weight_ema`` keeps an exponential moving average of the weights beside the trained model
    (``torch.optim.swa_utils.AveragedModel``; its buffers - codebook, norm statistics - are the live
    model's, copied at every update) and returns it as ``"ema"``.
    """
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    steps = len(batches)
    opt = torch.optim.Adam(net.parameters(), lr=3e-4)
    sched = None
    if lr_schedule != "constant":
        from ndvq.run.optim import lr_lambda

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(lr_schedule, warmup_steps, steps, min_lr_ratio, steps))
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(weight_ema)) if weight_ema else None
    if ema is not None:
        ema.module.eval()  # only ever evaluated: norms use its running statistics, the codebook stays put
    ema_trace = {}
    probe_at = {steps * (i + 1) // (probes + 1) for i in range(probes)}
    trace, restarts, last_restart, seconds = {}, [], torch.full((k,), -1), 0.0
    net.train()
    for step, x in enumerate(batches):
        t0 = time.perf_counter()
        if step == restarts_until and hasattr(getattr(net, "bottleneck", None), "quantizer"):
            net.bottleneck.quantizer.restart = "none"  # eager mode reads this option every step
        due = _due_restarts(net)
        restarts.append(0 if due is None else int(due.sum()))
        if due is not None:
            last_restart[due] = step
        loss = step_loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        if ema is not None:
            ema.update_parameters(net)
        seconds += time.perf_counter() - t0
        if step + 1 in probe_at:
            net.eval()
            trace[step + 1] = round(evaluate(encode_decode, test, k, with_ssim=False)["psnr"], 3)
            if ema is not None:
                ema_trace[step + 1] = round(evaluate(_closure_of(net, ema.module), test, k, with_ssim=False)["psnr"], 3)
            net.train()
    net.eval()
    out = {"train_s": seconds, "trace": trace, "restarts": sum(restarts),
           "restarts_last_quarter": sum(restarts[-(steps // 4):]), "last_restart": last_restart}
    if ema is not None:
        out.update(ema=ema.module, trace_ema=ema_trace)
    return out


def train_run(model: str, k: int, seed: int, order: int, steps: int, overrides: dict | None = None,
              probes: int = 0, quick: bool = False, state_dir: str | None = None) -> dict:
    """Train one tokenizer and measure it.

    Args:
        model: one of :data:`MODELS`.
        k: codebook size.
        seed: initial seed (weights, the quantizer's random draws).
        order: batch-order seed (which patches each step sees).
        steps: training steps.
        overrides: ``ndvq.VQVAE`` arguments changed from the defaults (diagnosis); the extra key
            ``restarts_until`` stops dead-code restarts at that step, ``lr_schedule`` (``"cosine"``) decays the
            learning rate to ``min_lr_ratio`` (default 0) of 3e-4 after ``warmup_steps`` (default 0),
            ``weight_ema`` (a decay) also measures a moving average of the weights. Default None.
        probes: held-out PSNR also at this many evenly spaced steps before the end. Default 0.
        quick: small data (smoke run). Default False.
        state_dir: save the trained weights there (``<model>-<k>-<steps>-<seed>-<order>-<overrides crc>.pt``).
            Default None.
    """
    d = data(quick)
    train, test = d["train"], d["test"]
    torch.manual_seed(seed)
    overrides = dict(overrides or {})
    switches = {key: overrides.pop(key) for key in ("restarts_until", "lr_schedule", "min_lr_ratio", "warmup_steps",
                                                    "weight_ema") if key in overrides}
    restarts_until = switches.get("restarts_until")
    net, step_loss, encode_decode = build(model, k, overrides)
    g = torch.Generator().manual_seed(1000 + order)
    batches = [train[torch.randint(0, len(train), (32,), generator=g)] for _ in range(steps)]
    res = {"model": model, "k": k, "seed": seed, "order": order, "steps": steps,
           "norm": overrides.get("norm", default_norm()) if model in NORM_MODELS else None,
           "beta": _beta_of(net),
           "overrides": {**overrides, **switches}}
    res.update(_train(net, step_loss, encode_decode, batches, test, k, probes, restarts_until,
                      switches.get("lr_schedule", "constant"), switches.get("weight_ema"),
                      switches.get("min_lr_ratio", 0.0), switches.get("warmup_steps", 0)))
    ema = res.pop("ema", None)
    if ema is not None:  # the weight average, measured like the run itself (run_all stores it as its own entry)
        avg = _closure_of(net, ema)
        held = evaluate(avg, test, k)
        res["average"] = dict(psnr=held["psnr"], psnr_patch=held["psnr_patch"], ssim=held["ssim"], usage=held["used"],
                              alive=evaluate(avg, fresh_crops(k, quick), k, with_ssim=False)["used"],
                              trace=res.pop("trace_ema"))
        if _has_batch_norm(net):
            res["average"]["psnr_recalibrated"] = evaluate(_closure_of(net, recalibrated(ema, train[:2048])), test, k,
                                                           with_ssim=False)["psnr"]
    held = evaluate(encode_decode, test, k)
    res.update(psnr=held["psnr"], psnr_patch=held["psnr_patch"], ssim=held["ssim"], usage=held["used"],
               alive=evaluate(encode_decode, fresh_crops(k, quick), k, with_ssim=False)["used"])
    young = res.pop("last_restart") >= steps - max(1, steps // 10)  # codes re-seeded in the last 10% of the steps
    if model != "continuous":  # share of held-out tokens on them
        with torch.no_grad():
            codes = torch.cat([encode_decode(part)[1].flatten().long() for part in test.split(256)])
        res["young_share"] = float(young[codes.clamp_max(k - 1)].float().mean())
    if state_dir:
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        tag = zlib.crc32(json.dumps(res["overrides"], sort_keys=True).encode())  # one file per variant
        res["state"] = str(Path(state_dir) / f"{model}-{k}-{steps}-{seed}-{order}-{tag:08x}.pt")
        torch.save(net.state_dict(), res["state"])
    if _has_batch_norm(net):
        res["psnr_recalibrated"] = evaluate(_closure(model, recalibrated(net, train[:2048])), test, k,
                                            with_ssim=False)["psnr"]
    return res


def _closure_of(net, other):
    """``encode_decode`` of ``other``, a module of the same kind as ``net`` (a copy or a weight average)."""
    if isinstance(net, Continuous):
        return _closure("continuous", other)
    return _closure("reference" if type(net).__module__.startswith("nd_vq_vae") else "ndvq", other)


def _reference_encode_decode(net):
    """The reference's ``encode_decode`` without its eval-time one-hot.

    ``nd_vq_vae``'s ``Codebook.forward`` builds a ``[tokens, K]`` one-hot in eval mode too (for statistics it
    only needs in training): at K=16384 that is most of a run's evaluation time. This computes the same
    distances and argmin as its forward and decodes the codes with its own ``decode``; the reconstruction
    differs from ``forward``'s only by the rounding of its straight-through ``(e - z) + z``.
    """
    def run(x):
        z = net.pre_vq_conv(net.encoder(x))  # [B, E, *L]
        flat = z.movedim(1, -1).flatten(end_dim=-2)  # [B * L, E]
        e = net.codebook.embeddings  # [K, E]
        distances = (flat ** 2).sum(dim=1, keepdim=True) - 2 * flat @ e.t() + (e.t() ** 2).sum(dim=0, keepdim=True)
        codes = distances.argmin(dim=1).view(z.shape[0], *z.shape[2:])  # [B, *L]
        return net.decode(codes), codes

    return run


def _closure(model: str, net):
    """``encode_decode`` for an already built ``net``."""
    if model == "reference":
        return _reference_encode_decode(net)
    if model == "continuous":
        return lambda x: (net(x), None)
    return lambda x: (lambda out: (out.reconstruction, out.indices))(net(x))


# ----------------------------------------------------------------------------------- the page
METRICS = (("psnr", "held-out PSNR (dB)", 1.0), ("ssim", "held-out SSIM", 1.0), ("alive", "codes alive %", 100.0),
           ("usage", "held-out usage %", 100.0))


#: The commitment weight of every run that records none (ndvq's default before 2026-12-03; the reference's).
OLD_BETA = 0.25


def _beta_of(net) -> float | None:
    """The commitment weight of ndvq's quantizer in ``net`` (None for FSQ, the unquantized backbone and the
    reference, whose 0.25 is fixed in :func:`build`)."""
    return getattr(getattr(getattr(net, "bottleneck", None), "quantizer", None), "beta", None)


def setting(r: dict) -> str:
    """The group a run's defaults put it in: its norm (VideoGPT models), then its commitment weight when it
    is not :data:`OLD_BETA` (``"channel, beta 0.5"``; runs stored before runs recorded it used 0.25)."""
    beta = r.get("beta", OLD_BETA if r["model"] in ("ndvq", "ldm-vq") else None)
    return (r.get("norm") or "") + (f", beta {beta:g}" if beta not in (None, OLD_BETA) else "")


def default_norm() -> str:
    """The norm ``ndvq.VQVAE`` builds by default (asked of its signature)."""
    import inspect

    from ndvq import VQVAE

    return inspect.signature(VQVAE).parameters["norm"].default


def default_setting() -> str:
    """The :func:`setting` of ndvq's ``VQVAE`` as built today: its default norm and its quantizer's default
    commitment weight (asked of a freshly built model, so a changed default moves the page's first table)."""
    return setting({"model": "ndvq", "norm": default_norm(), "beta": _beta_of(build("ndvq", 16)[0])})


def groups(results: dict) -> dict[tuple, list[dict]]:
    """Runs grouped by (K, steps, model, setting, variant), each group sorted by (seed, order); the setting
    (:func:`setting`) is the VideoGPT backbone's norm and a commitment weight other than 0.25 (``""`` for
    the reference)."""
    out: dict[tuple, list[dict]] = {}
    for r in results.values():
        key = (r["k"], r["steps"], MODELS.index(r["model"]), setting(r), r.get("variant", ""))
        out.setdefault(key, []).append(r)
    return {key: sorted(v, key=lambda r: (r["seed"], r["order"])) for key, v in sorted(out.items())}


def label(model: str, norm: str = "", variant: str = "") -> str:
    """A tokenizer's name in the tables: ``"ndvq VQVAE (VideoGPT + VQ), channel norm, beta 0.5 (weight average
    0.99)"``; ``norm`` is a :func:`setting`."""
    name, _, rest = norm.partition(", ")
    return (LABELS[model] + (f", {name} norm" if name else "") + (f", {rest}" if rest else "")
            + (f" ({variant})" if variant else ""))


def _stats(runs: list[dict], key: str, scale: float) -> tuple[float, float, float]:
    vals = [scale * r[key] for r in runs]
    return min(vals), statistics.fmean(vals), max(vals)


def summary_table(results: dict) -> str:
    """min / mean / max of every metric per group, plus the spread of PSNR."""
    rows = []
    for (k, steps, m, norm, variant), runs in groups(results).items():
        row = [f"{k:,}", steps, label(MODELS[m], norm, variant), len(runs)]
        for key, _, scale in METRICS:
            lo, mean, hi = _stats(runs, key, scale)
            digits = 3 if key == "ssim" else 2
            row.append("n/a" if math.isnan(mean) else f"{lo:.{digits}f} / **{mean:.{digits}f}** / {hi:.{digits}f}")
        lo, _, hi = _stats(runs, "psnr", 1.0)
        rows.append(row + [f"{hi - lo:.2f}", f"{statistics.fmean(r['train_s'] for r in runs):.0f}"])
    return markdown_table(["K", "steps", "tokenizer", "runs"] + [f"{label}: min / **mean** / max" for _, label, _ in METRICS]
                          + ["PSNR spread (dB)", "train s / run"], rows)


def targets(results: dict, keep=None) -> list[list[str]]:
    """The issue's targets on ndvq against the reference, per K and steps both were run at: the default
    runs against the reference's, and a variant measured on both (e.g. ``--weight-average``) against the
    reference's runs of the same variant.

    Args:
        results: stored runs (``run_key -> run``).
        keep: ``keep(setting) -> bool`` picks the ndvq settings (:func:`setting`) to read; default None (all).
    """
    g, rows = groups(results), []
    for (k, steps, m, norm, variant), runs in g.items():
        ref = g.get((k, steps, MODELS.index("reference"), "", variant))
        if MODELS[m] != "ndvq" or not ref or (keep is not None and not keep(norm)):
            continue
        lo, mean, hi = _stats(runs, "psnr", 1.0)
        ref_mean = statistics.fmean(r["psnr"] for r in ref)
        alive = min(100 * r["alive"] for r in runs)
        if k == 512:
            want = [("worst run >= reference mean + 1.0 dB", f"{lo:.2f} vs {ref_mean:.2f} + 1.0", lo >= ref_mean + 1.0),
                    ("spread (max - min) <= 0.5 dB", f"{hi - lo:.2f} dB", hi - lo <= 0.5),
                    ("every run >= 95% alive", f"min {alive:.1f}%", alive >= 95.0)]
        else:
            want = [("mean >= reference mean + 1.5 dB", f"{mean:.2f} vs {ref_mean:.2f} + 1.5", mean >= ref_mean + 1.5),
                    ("every run >= 90% alive", f"min {alive:.1f}%", alive >= 90.0)]
        runs_col = f"{len(runs)} vs {len(ref)}" + (f" ({variant}, both)" if variant else "")
        rows += [[f"{k:,}", steps, norm, runs_col, what, got, "met" if ok else "**not met**"]
                 for what, got, ok in want]
    return rows


def _percent(share: float) -> str:
    return "n/a" if math.isnan(share) else f"{100 * share:.1f}"


def per_run_table(results: dict) -> str:
    rows = []
    for (k, steps, m, norm, variant), runs in groups(results).items():
        for r in runs:
            rows.append([f"{k:,}", steps, label(MODELS[m], norm, variant), r["seed"], r["order"],
                         f"{r['psnr']:.2f}", f"{r['ssim']:.3f}", _percent(r["alive"]), _percent(r["usage"]),
                         f"{r['psnr_recalibrated']:.2f}" if "psnr_recalibrated" in r else "n/a", r.get("cpu", "n/a")])
    return markdown_table(["K", "steps", "tokenizer", "seed", "order", "PSNR (dB)", "SSIM", "alive %", "usage %",
                           "PSNR, batch-norm statistics re-estimated", "CPU"], rows)


def diagnosis_table(results: dict) -> str:
    """Each diagnosis run (a ``--variant``) next to the run without it of the same K, steps, norm, seed and order."""
    default = {(r["k"], r["steps"], setting(r), r["seed"], r["order"]): r for r in results.values()
               if r["model"] == "ndvq" and not r.get("variant")}
    rows = []
    for r in sorted(results.values(), key=lambda r: (r["k"], setting(r), r.get("variant", ""), r["seed"],
                                                      r["order"])):
        base = default.get((r["k"], r["steps"], setting(r), r["seed"], r["order"]))
        if not r.get("variant") or r["model"] != "ndvq" or base is None:
            continue
        rows.append([f"{r['k']:,}", r["steps"], setting(r), r["seed"], r["order"], r["variant"],
                     f"{json.dumps(r['overrides'])}",
                     f"{base['psnr']:.2f}", f"{r['psnr']:.2f}", f"{r['psnr'] - base['psnr']:+.2f}",
                     f"{100 * base['alive']:.1f} -> {100 * r['alive']:.1f}"])
    return markdown_table(["K", "steps", "setting", "seed", "order", "variant", "ndvq arguments", "default PSNR (dB)",
                           "variant PSNR (dB)", "difference (dB)", "alive %"], rows)


def write_doc(path: Path, results: dict, info: dict, command: str) -> None:
    """docs/benchmarks-quality.md from all stored runs (default ndvq, the reference, ldm-vq, fsq)."""
    on_both = ({r.get("variant") for r in results.values() if r["model"] == "reference"}
               & {r.get("variant") for r in results.values() if r["model"] != "reference"})
    main = {key: r for key, r in results.items() if r.get("variant", "") in on_both | {""}}  # + variants of both
    today = default_setting()
    header = ["K", "steps", "ndvq setting", "runs (ndvq vs reference)", "target", "measured", ""]
    lines = [
        "# Model quality on held-out photographs: ndvq vs the reference, over seeds and batch orders",
        "",
        f"Produced by `{command}` (and earlier invocations merged through `benchmarks/results/quality.json`).",
        "Method: the module docstring of `benchmarks/quality.py`. Each tokenizer trains once per (initial seed,",
        "batch order, K) on 8192 32x32 RGB patches of six photographs (Adam lr 3e-4, batch 32); held-out",
        "figures are on 2048 patches of two photographs never trained on (chelsea, motorcycle; PSNR of the pooled",
        "MSE, data range 2); codes alive",
        "on 128 * K / 64 fresh crops of the training photographs (>= 128 tokens per code).",
        "",
        markdown_table(["machine", ""], [[k, v] for k, v in info.items()]),
        "",
        f"## Targets (issue 18), today's defaults ({today})",
        "",
        "Read against the reference trained the same way (the rows without a variant: the last weights of Adam",
        "at a constant 3e-4, the issue's protocol; `weight average 0.99`: the moving average of the same runs'",
        "weights, what `ndvq train` delivers by default (`train.lr_schedule=constant`, `train.weight_ema=0.99`);",
        "`cosine to 0.1x`: the rate decaying to a tenth after 50 warm-up steps, the previous default).",
        "",
        markdown_table(header, targets(main, lambda s: s == today)),
        "",
        "## Targets of the earlier defaults (kept for the findings below)",
        "",
        markdown_table(header, targets(main, lambda s: s != today)),
        "",
        "## Summary (min / mean / max over runs)",
        "",
        summary_table(main),
        "",
        "## Per run",
        "",
        per_run_table(main),
        "",
        "## Diagnosis runs (issue 18, point 1)",
        "",
        "One switch changed against the default run with the same initial seed and batch order (paired: both",
        "see the same weights at step 0 and the same batches). `restarts_until` stops dead-code restarts at",
        "that step (a benchmark switch, not a quantizer option). The last column of the per-run table is the",
        "other paired check: the same trained model with its batch-norm statistics re-estimated on 2048",
        "training patches (weights and codebook unchanged).",
        "",
        diagnosis_table(results),
        "",
    ]
    old = path.read_text() if path.is_file() else ""
    if NOTES_MARK in old:  # hand-written findings below the mark survive a rebuild
        lines += [NOTES_MARK + old.split(NOTES_MARK, 1)[1].rstrip("\n"), ""]
    path.write_text("\n".join(lines))


# ----------------------------------------------------------------------------------- driver
def _init_worker(threads: int) -> None:
    set_threads(threads)
    warnings.filterwarnings("ignore")


def _task(kwargs: dict) -> dict:
    """One run in a worker process; the result names the CPU that ran it (floating-point results differ between CPUs)."""
    return {**train_run(**kwargs), "cpu": machine_info(1)["cpu"]}


def run_key(r: dict) -> str:
    """One results entry per (model, variant, K, steps, seed, order) and, for the VideoGPT models, norm
    (and a commitment weight other than 0.25: :func:`setting`)."""
    return json.dumps([r["model"], r.get("variant", ""), r["k"], r["steps"], r["seed"], r["order"]]
                      + ([setting(r)] if setting(r) else []))


def run_all(tasks: list[dict], jobs: int, threads: int, results: dict, save=None, log=print) -> dict:
    """Run ``tasks`` (``train_run`` keyword dicts plus ``variant``) in ``jobs`` processes; merge into ``results``."""
    with ProcessPoolExecutor(max_workers=max(1, jobs), initializer=_init_worker, initargs=(threads,)) as pool:
        futures = {}
        for t in tasks:
            kwargs = {k: v for k, v in t.items() if k != "variant"}
            futures[pool.submit(_task, kwargs)] = t.get("variant", "")
        for fut in as_completed(futures):
            r = fut.result()
            r["variant"] = futures[fut]
            results[run_key(r)] = r
            log(f"{r['model']} {r['variant']} K={r['k']} seed {r['seed']} order {r['order']}: PSNR {r['psnr']:.2f} "
                f"(per patch {r['psnr_patch']:.2f}) "
                f"(recal {r.get('psnr_recalibrated', float('nan')):.2f}) SSIM {r['ssim']:.3f} alive "
                f"{100 * r['alive']:.1f}% usage {100 * r['usage']:.1f}% restarts {r['restarts']} "
                f"(last quarter {r['restarts_last_quarter']}, held-out tokens on codes re-seeded in the last 10%: "
                f"{100 * r.get('young_share', 0):.1f}%) trace {r['trace']} {r['train_s']:.0f} s", flush=True)
            avg = r.pop("average", None)
            if avg is not None:  # the weight average kept beside the run: its own entry, same training
                decay = r["overrides"].pop("weight_ema")
                a = {**r, **avg, "variant": ", ".join(v for v in (r["variant"], f"weight average {decay}") if v),
                     "overrides": {**r["overrides"], "weight_ema": decay}}
                results[run_key(a)] = a
                log(f"{a['model']} {a['variant']} K={a['k']} seed {a['seed']} order {a['order']}: PSNR {a['psnr']:.2f} "
                    f"SSIM {a['ssim']:.3f} alive {100 * a['alive']:.1f}% usage {100 * a['usage']:.1f}%", flush=True)
            if save is not None:
                save(results)
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["ndvq", "reference"], choices=MODELS)
    p.add_argument("--ks", nargs="+", type=int, default=[512])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="initial seeds (default 0 1)")
    p.add_argument("--orders", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="batch orders (default 0-4)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--probes", type=int, default=0, help="held-out PSNR at this many earlier steps too")
    p.add_argument("--variant", default="", help="a name for --overrides (diagnosis runs)")
    p.add_argument("--weight-average", type=float, default=None, metavar="DECAY",
                   help="also measure a moving average of each run's weights (stored as the variant "
                        "'weight average DECAY'; the training is the run's own)")
    p.add_argument("--overrides", type=json.loads, default=None, help="ndvq.VQVAE arguments as JSON")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--state-dir", default=None, help="save every trained model's weights there")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="smoke run: 20 steps on 512 patches, one seed and order, one K; "
                   "nothing is written")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--out", type=Path, default=DOC)
    p.add_argument("--rebuild", action="store_true", help="only rebuild the page from the stored results")
    p.add_argument("--merge", type=Path, nargs="*", default=[],
                   help="results files of other invocations (e.g. diagnosis runs in parallel) to merge in")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.orders = 20, [0], [0]
        args.ks = [k for k in args.ks if k in FSQ_LEVELS][:1] or [512]
    results = {} if args.quick or not args.results.is_file() else json.loads(args.results.read_text())
    for extra in args.merge:
        results.update(json.loads(extra.read_text()))
    results = {run_key(r): r for r in results.values()}
    overrides = {**(args.overrides or {}), **({"weight_ema": args.weight_average} if args.weight_average else {})}
    tasks = [dict(model=m, k=k, seed=s, order=o, steps=args.steps, overrides=overrides or None, probes=args.probes,
                  quick=args.quick, variant=args.variant, state_dir=args.state_dir)
             for k in args.ks for s in args.seeds for o in args.orders for m in args.models]

    def save(res: dict) -> None:
        if not args.quick:
            args.results.parent.mkdir(parents=True, exist_ok=True)
            args.results.write_text(json.dumps(res, indent=1))
    start = time.perf_counter()
    info = machine_info(args.threads)
    if args.rebuild:  # this machine did not run the stored results: say only when the page was rebuilt
        info = {"runs": "the machines and dates named in the findings below", "page rebuilt": info["date"]}
    command = "python -m benchmarks.quality " + " ".join(argv if argv is not None else sys.argv[1:])

    def save_and_write(res: dict) -> None:
        save(res)
        if not args.variant and not args.quick:
            write_doc(args.out, res, info, command)
    if args.rebuild:
        save_and_write(results)
        return
    run_all(tasks, args.jobs, args.threads, results, save_and_write)
    print(f"{len(tasks)} runs in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
