"""The bad-input catalogue: one table of hostile or broken inputs, each with the exit code and the words the
one-line message must contain (the offending file, key or value).

A case builds its files inside a sandbox folder and returns the ``ndvq`` arguments (or a Python callable,
for library-level inputs). ``test_catalogue.py`` runs every case in-process and checks the exit code, the
one-line message, no traceback, no code executed (a canary file that hostile payloads try to create) and
no file written or changed outside the run directory (the whole sandbox and the shared trained run are
snapshotted).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from reliability_helpers import TINY


@dataclass
class Ctx:
    """What a case may use: ``sandbox`` (its own empty folder, the cwd), the shared trained ``run`` and
    ``codes`` (read-only), and the ``canary`` path hostile payloads try to create."""

    sandbox: Path
    run: Path
    codes: Path
    canary: Path

    def path(self, rel: str) -> Path:
        p = self.sandbox / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


@dataclass
class Case:
    id: str
    group: str
    build: Callable[[Ctx], list | Callable]
    code: int = 2
    expect: tuple[str, ...] = ()
    handled: bool = False  # exit 0 with a notice/warning instead of an error
    may_write: tuple[str, ...] = field(default_factory=tuple)  # sandbox-relative folders a handled case may change


class Evil:
    """A pickle payload: unpickling it runs ``touch CANARY``."""

    def __init__(self, canary: Path):
        self.canary = canary

    def __reduce__(self):
        return (os.system, (f"touch {self.canary}",))


# ------------------------------------------------------------------------------------------ helpers
def train_args(ctx: Ctx, *extra: str, name: str = "x") -> list:
    return ["train", *TINY, f"run.root={ctx.sandbox / 'runs'}", f"run.name={name}", *extra]


def write(ctx: Ctx, rel: str, data: str | bytes) -> Path:
    p = ctx.path(rel)
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return p


def good_ckpt(ctx: Ctx) -> dict:
    return torch.load(ctx.run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def ckpt_run(ctx: Ctx, payload) -> Path:
    """``sandbox/bad`` holding ``checkpoints/last.ckpt`` = ``payload`` (bytes, or an object for torch.save)."""
    p = ctx.path("bad/checkpoints/last.ckpt")
    if isinstance(payload, bytes):
        p.write_bytes(payload)
    else:
        torch.save(payload, p)
    return p.parent.parent


def edit_ckpt(fn: Callable[[dict], object]) -> Callable[[Ctx], list]:
    def build(ctx: Ctx) -> list:
        ck = good_ckpt(ctx)
        out = fn(ck)
        return ["eval", ckpt_run(ctx, ck if out is None else out)]
    return build


def pretrained(ctx: Ctx, config, weights: bytes | None = None) -> Path:
    """``sandbox/pre`` with ``config.json`` (a dict/list, or raw text) and ``model.safetensors``."""
    from ndvq import VQVAE

    d = ctx.path("pre/x").parent
    good = VQVAE(n_dims=2, in_channels=3, n_hiddens=8, downsample=[4, 4], embedding_dim=4, n_codes=16, n_head=0,
                 norm="group", num_groups=4)
    good.save_pretrained(d)
    if weights is not None:
        (d / "model.safetensors").write_bytes(weights)
    if config is not None:
        (d / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    return d


def vqvae_config(**changes) -> dict:
    cfg = {"_class_name": "VQVAE", "n_dims": 2, "in_channels": 3, "n_hiddens": 8, "downsample": [4, 4],
           "embedding_dim": 4, "n_codes": 16, "n_head": 0, "norm": "group", "num_groups": 4}
    cfg.update(changes)
    return cfg


def codes_case(fn: Callable[[dict, Ctx], object]) -> Callable[[Ctx], list]:
    """Decode a copy of the good codes file changed by ``fn(arrays, ctx)`` (in place)."""
    def build(ctx: Ctx) -> list:
        with np.load(ctx.codes, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        fn(arrays, ctx)
        p = ctx.path("bad_codes.npz")
        np.savez(p, **arrays)
        return ["decode", ctx.run, p, "--out", ctx.sandbox / "out"]
    return build


def npz_with_object_names(ctx: Ctx) -> list:
    with np.load(ctx.codes, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["names"] = np.array([Evil(ctx.canary)] * len(arrays["names"]), dtype=object)
    p = ctx.path("evil_codes.npz")
    np.savez(p, **arrays)
    return ["decode", ctx.run, p, "--out", ctx.sandbox / "out"]


def zip_of_text(ctx: Ctx, rel: str) -> Path:
    p = ctx.path(rel)
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("hello.txt", "not a checkpoint")
    return p


def legacy_pickle_ckpt(ctx: Ctx) -> list:
    buf = io.BytesIO()
    torch.save({"model": {}}, buf, _use_new_zipfile_serialization=False)
    return ["eval", ckpt_run(ctx, buf.getvalue())]


def locked_run(ctx: Ctx) -> list:
    d = ctx.path("runs/x/.lock")
    import socket

    d.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}))
    return train_args(ctx)


def existing_run(ctx: Ctx) -> list:
    write(ctx, "runs/x/metrics.jsonl", '{"step": 1, "split": "train"}\n')
    return train_args(ctx)


def image_folder(ctx: Ctx, files: dict[str, bytes]) -> Path:
    d = ctx.path("imgs/keep").parent
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d


def unwritable_home(ctx: Ctx) -> Callable:
    def call() -> int:
        from ndvq.data.common import cache_dir

        old = {k: os.environ.get(k) for k in ("HOME", "NDVQ_CACHE")}
        os.environ.pop("NDVQ_CACHE", None)
        os.environ["HOME"] = "/proc"
        try:
            import warnings

            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                where = cache_dir()
            assert not str(where).startswith("/proc"), where
        finally:
            for k, v in old.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        return 0
    return call


def resume_with_garbage_metrics(ctx: Ctx) -> list:
    import shutil

    run = ctx.sandbox / "runs" / "copy"
    shutil.copytree(ctx.run, run)
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('garbage\n{"step": 9, "split"\n')
    return ["train", "--resume", run, "train.max_steps=6"]


def medical_garbage(ctx: Ctx) -> list:
    p = write(ctx, "vae_config.json", json.dumps({"autoencoder_def": {"spatial_dims": 9}, "autoencoder_train": {}}))
    return ["train", "-c", p, f"run.root={ctx.sandbox / 'runs'}", "run.name=x"]


# ------------------------------------------------------------------------------------------ the table
RANDOM = os.urandom(4096)
YAML_TAG = '!!python/object/apply:os.system ["touch {canary}"]\n'
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))

CASES: list[Case] = [
    # ---------------------------------------------------------------- config files and overrides
    Case("config-missing", "config", lambda c: ["train", "-c", c.sandbox / "nope.yaml"], expect=("nope.yaml", "does not exist")),
    Case("config-directory", "config", lambda c: ["train", "-c", c.path("cfgdir/x").parent], expect=("cfgdir", "is a directory")),
    Case("config-yaml-syntax", "config", lambda c: ["train", "-c", write(c, "bad.yaml", "model: [unclosed\n")], expect=("bad.yaml",)),
    Case("config-yaml-list", "config", lambda c: ["train", "-c", write(c, "list.yaml", "- 1\n- 2\n")], expect=("list.yaml", "mapping")),
    Case("config-yaml-python-tag", "config", lambda c: ["train", "-c", write(c, "tag.yaml", YAML_TAG.format(canary=c.canary))], expect=("tag.yaml",)),
    Case("config-yaml-tag-in-value", "config", lambda c: ["train", "-c", write(c, "tag2.yaml", "model:\n  n_codes: " + YAML_TAG.format(canary=c.canary))], expect=("tag2.yaml",)),
    Case("config-toml-syntax", "config", lambda c: ["train", "-c", write(c, "bad.toml", "[model\nn_codes = 3")], expect=("bad.toml",)),
    Case("config-json-syntax", "config", lambda c: ["train", "-c", write(c, "bad.json", "{model: 1")], expect=("bad.json",)),
    Case("config-random-bytes", "config", lambda c: ["train", "-c", write(c, "rand.yaml", RANDOM)], expect=("rand.yaml",)),
    Case("config-billion-laughs", "config", lambda c: ["train", "-c", write(c, "laughs.yaml", LAUGHS)], expect=("'a'",)),
    Case("config-unknown-key", "config", lambda c: train_args(c, "train.n_codes=4"), expect=("train.n_codes", "model.n_codes")),
    Case("config-unknown-section", "config", lambda c: train_args(c, "modle.n_codes=4"), expect=("modle.n_codes",)),
    Case("config-unknown-key-in-file", "config", lambda c: ["train", "-c", write(c, "uk.yaml", "train:\n  lr: 0.1\n")], expect=("train.lr",)),
    Case("config-lr-too-big", "config", lambda c: train_args(c, "train.learning_rate=5"), expect=("train.learning_rate", "5")),
    Case("config-lr-inf", "config", lambda c: train_args(c, "train.learning_rate=1e999"), expect=("train.learning_rate",)),
    Case("config-n-codes-1", "config", lambda c: train_args(c, "model.n_codes=1"), expect=("model.n_codes", "1")),
    Case("config-n-codes-text", "config", lambda c: train_args(c, "model.n_codes=abc"), expect=("model.n_codes", "abc")),
    Case("config-n-codes-huge", "config", lambda c: train_args(c, "model.n_codes=1e11"), expect=("model.n_codes=100000000000", "GB")),
    Case("config-embedding-huge", "config", lambda c: train_args(c, "model.embedding_dim=100000000", "model.n_codes=100000"), expect=("model.embedding_dim=100000000", "GB")),
    Case("config-num-quantizers", "config", lambda c: train_args(c, "model.bottleneck=residual", "model.quantizer.num_quantizers=1000000"), expect=("model.quantizer.num_quantizers", "1000000")),
    Case("config-n-dims-4", "config", lambda c: train_args(c, "model.n_dims=4"), expect=("model.n_dims", "4")),
    Case("config-downsample-len", "config", lambda c: train_args(c, "model.videogpt.downsample=[2,2,2]"), expect=("model.videogpt.downsample",)),
    Case("config-batch-size-0", "config", lambda c: train_args(c, "train.batch_size=0"), expect=("train.batch_size", "0")),
    Case("config-batch-size-neg", "config", lambda c: train_args(c, "train.batch_size=-3"), expect=("train.batch_size", "-3")),
    Case("config-max-steps-neg", "config", lambda c: train_args(c, "train.max_steps=-1"), expect=("train.max_steps",)),
    Case("config-precision", "config", lambda c: train_args(c, "train.precision=64"), expect=("train.precision", "64")),
    Case("config-override-no-equals", "config", lambda c: train_args(c, "model.n_codes"), expect=("model.n_codes", "key=value")),
    Case("config-hierarchical-ldm", "config", lambda c: train_args(c, "model.kind=hierarchical", "model.backbone=ldm"), expect=("model.kind=hierarchical",)),
    Case("config-accelerator-gpu", "config", lambda c: train_args(c, "train.accelerator=gpu"), expect=("train.accelerator",)),
    Case("config-medical-not-medical", "config", lambda c: ["train", "-c", write(c, "plain.json", "{}"), "--config-format", "medical"], expect=("plain.json", "autoencoder_def")),
    Case("config-medical-bad-value", "config", medical_garbage, expect=("spatial_dims",)),
    Case("config-in-channels-mismatch", "config", lambda c: train_args(c, "model.in_channels=1"), expect=("model.in_channels=1", "channel")),
    Case("config-empty-file", "config", lambda c: ["train", "-c", write(c, "empty.yaml", ""), "--print-config"], code=0, handled=True, expect=("empty.yaml", "empty")),
    # ---------------------------------------------------------------- run directories
    Case("run-name-dotdot", "run", lambda c: train_args(c, name="../escaped"), expect=("run.name='../escaped'",)),
    Case("run-name-absolute", "run", lambda c: train_args(c, name=str(c.sandbox / "abs")), expect=("run.name=",)),
    Case("run-name-nested", "run", lambda c: train_args(c, name="a/b"), expect=("run.name='a/b'",)),
    Case("run-name-dots", "run", lambda c: train_args(c, name=".."), expect=("run.name='..'",)),
    Case("run-name-is-file", "run", lambda c: (write(c, "runs/x", "file"), train_args(c))[1], expect=("runs/x", "is a file")),
    Case("run-exists", "run", existing_run, expect=("runs/x", "already holds a run", "--overwrite")),
    Case("run-locked", "run", locked_run, expect=("runs/x", "in use", f"pid {os.getpid()}")),
    Case("resume-missing", "run", lambda c: ["train", "--resume", c.sandbox / "runs/none"], expect=("runs/none", "does not exist")),
    Case("resume-no-checkpoint", "run", lambda c: ["train", "--resume", c.path("runs/empty/x").parent], expect=("runs/empty", "no checkpoint")),
    Case("resume-no-config", "run", lambda c: ["train", "--resume", ckpt_run(c, RANDOM)], expect=("bad", "no config.yaml")),
    Case("resume-random-bytes", "run", lambda c: ["train", "--resume", ckpt_run(c, RANDOM), "-c", c.run / "config.yaml"], expect=("last.ckpt", "not an ndvq checkpoint")),
    Case("resume-and-overwrite", "run", lambda c: ["train", "--resume", c.run, "--overwrite", *TINY], expect=("--overwrite",)),
    Case("resume-other-architecture", "run", lambda c: ["train", "--resume", c.run, "model.n_codes=64"], expect=("model.n_codes", "64")),
    # ---------------------------------------------------------------- data
    Case("data-root-missing", "data", lambda c: train_args(c, "data.kind=image", f"data.root={c.sandbox / 'nodata'}"), expect=("nodata",)),
    Case("data-root-empty", "data", lambda c: train_args(c, "data.kind=image", f"data.root={c.path('emptydata/x').parent}"), expect=("emptydata",)),
    Case("data-root-is-file", "data", lambda c: train_args(c, "data.kind=image", f"data.root={write(c, 'afile.png', RANDOM)}"), expect=("afile.png",)),
    Case("data-only-garbage-images", "data", lambda c: train_args(c, "data.kind=image", f"data.root={image_folder(c, {'a.png': RANDOM, 'b.jpg': b''})}"), expect=("imgs",)),
    Case("data-npy-pickled", "data", lambda c: train_args(c, "data.kind=series", f"data.root={image_folder(c, {'s.npy': pickle.dumps(Evil(c.canary))})}"), expect=("imgs",)),
    Case("data-wrong-dims", "data", lambda c: train_args(c, "data.kind=audio", f"data.root={image_folder(c, {'a.wav': RANDOM})}"), expect=("imgs",)),
    # ---------------------------------------------------------------- checkpoints
    Case("ckpt-random-bytes", "checkpoint", lambda c: ["eval", ckpt_run(c, RANDOM)], expect=("last.ckpt", "not an ndvq checkpoint (expected a zip written by torch.save)")),
    Case("ckpt-empty-file", "checkpoint", lambda c: ["eval", ckpt_run(c, b"")], expect=("last.ckpt", "not an ndvq checkpoint")),
    Case("ckpt-zip-of-text", "checkpoint", lambda c: ["eval", zip_of_text(c, "bad/checkpoints/last.ckpt").parent.parent], expect=("last.ckpt", "cannot read checkpoint")),
    Case("ckpt-legacy-pickle", "checkpoint", legacy_pickle_ckpt, expect=("last.ckpt", "not an ndvq checkpoint")),
    Case("ckpt-malicious-pickle", "checkpoint", lambda c: ["eval", ckpt_run(c, {"model": Evil(c.canary)})], expect=("last.ckpt", "never loads")),
    Case("ckpt-malicious-in-state", "checkpoint", lambda c: ["eval", ckpt_run(c, {**good_ckpt(c), "state": Evil(c.canary)})], expect=("last.ckpt", "never loads")),
    Case("ckpt-a-list", "checkpoint", lambda c: ["eval", ckpt_run(c, [1, 2, 3])], expect=("last.ckpt", "'model'")),
    Case("ckpt-no-model", "checkpoint", edit_ckpt(lambda ck: {k: v for k, v in ck.items() if k != "model"}), expect=("last.ckpt", "'model'")),
    Case("ckpt-unknown-class", "checkpoint", edit_ckpt(lambda ck: ck.update(model_class="os.system")), expect=("os.system", "unknown model class")),
    Case("ckpt-class-not-str", "checkpoint", edit_ckpt(lambda ck: ck.update(model_class=3)), expect=("model_class",)),
    Case("ckpt-args-not-dict", "checkpoint", edit_ckpt(lambda ck: ck.update(model_args=[1])), expect=("model_args",)),
    Case("ckpt-args-num-quantizers", "checkpoint", edit_ckpt(lambda ck: ck["model_args"].update(bottleneck="residual", quantizer={"num_quantizers": 10**6})), expect=("last.ckpt", "model.quantizer.num_quantizers", "1000000")),
    Case("ckpt-args-n-codes-huge", "checkpoint", edit_ckpt(lambda ck: ck["model_args"].update(n_codes=10**12)), expect=("last.ckpt", "model.n_codes=1000000000000", "GB")),
    Case("ckpt-args-unknown-key", "checkpoint", edit_ckpt(lambda ck: ck["model_args"].update(evil=1)), expect=("last.ckpt", "model.evil")),
    Case("ckpt-args-negative", "checkpoint", edit_ckpt(lambda ck: ck["model_args"].update(in_channels=-3)), expect=("last.ckpt", "model.in_channels", "-3")),
    Case("ckpt-weights-mismatch", "checkpoint", edit_ckpt(lambda ck: ck["model_args"].update(n_codes=64)), expect=("last.ckpt", "incompatible")),
    Case("ckpt-weights-missing", "checkpoint", edit_ckpt(lambda ck: ck.update(model={})), expect=("last.ckpt", "incompatible")),
    Case("ckpt-config-bad-value", "checkpoint", edit_ckpt(lambda ck: ck["config"]["train"].update(learning_rate=5)), expect=("last.ckpt", "train.learning_rate")),
    Case("ckpt-truncated", "checkpoint", lambda c: ["eval", ckpt_run(c, (c.run / "checkpoints/last.ckpt").read_bytes()[:5000])], expect=("last.ckpt",)),
    Case("eval-missing-run", "checkpoint", lambda c: ["eval", c.sandbox / "no-run"], expect=("no-run", "does not exist")),
    Case("eval-folder-without-checkpoint", "checkpoint", lambda c: ["eval", c.path("nockpt/a.txt").parent], expect=("nockpt", "no checkpoint")),
    # ---------------------------------------------------------------- pretrained folders
    Case("pre-no-weights", "pretrained", lambda c: ["eval", (lambda d: ((d / "model.safetensors").unlink(), d)[1])(pretrained(c, None))], expect=("pre", "model.safetensors")),
    Case("pre-bad-json", "pretrained", lambda c: ["eval", pretrained(c, "{not json")], expect=("config.json", "not valid JSON")),
    Case("pre-json-list", "pretrained", lambda c: ["eval", pretrained(c, [1, 2])], expect=("config.json", "_class_name")),
    Case("pre-unknown-class", "pretrained", lambda c: ["eval", pretrained(c, vqvae_config(_class_name="os.system"))], expect=("os.system", "unknown model class")),
    Case("pre-class-not-str", "pretrained", lambda c: ["eval", pretrained(c, vqvae_config(_class_name=["VQVAE"]))], expect=("config.json", "_class_name")),
    Case("pre-n-codes-huge", "pretrained", lambda c: ["eval", pretrained(c, vqvae_config(n_codes=10**12))], expect=("config.json", "model.n_codes=1000000000000", "GB")),
    Case("pre-num-quantizers", "pretrained", lambda c: ["eval", pretrained(c, vqvae_config(quantizer={"kind": "residual", "num_quantizers": 10**6}))], expect=("config.json", "model.quantizer.num_quantizers", "1000000")),
    Case("pre-klvae-huge", "pretrained", lambda c: ["eval", pretrained(c, {"_class_name": "KLVAE", "latent_channels": 10**12})], expect=("config.json", "model.embedding_dim")),
    Case("pre-unknown-arg", "pretrained", lambda c: ["eval", pretrained(c, vqvae_config(evil=1))], expect=("config.json", "evil")),
    Case("pre-n-dims-7", "pretrained", lambda c: ["eval", pretrained(c, vqvae_config(n_dims=7))], expect=("config.json", "model.n_dims", "7")),
    Case("pre-weights-pickle", "pretrained", lambda c: ["eval", pretrained(c, None, pickle.dumps(Evil(c.canary)))], expect=("model.safetensors", "cannot be loaded")),
    Case("pre-weights-random", "pretrained", lambda c: ["eval", pretrained(c, None, RANDOM)], expect=("model.safetensors", "cannot be loaded")),
    Case("pre-weights-other-shape", "pretrained", lambda c: ["eval", pretrained(c, vqvae_config(n_codes=64))], expect=("pre", "cannot be loaded")),
    Case("pre-valid-but-no-run", "pretrained", lambda c: ["eval", pretrained(c, None)], expect=("pre", "pretrained folder without a run config")),
    # ---------------------------------------------------------------- codes files (decode)
    Case("codes-missing", "codes", lambda c: ["decode", c.run, c.sandbox / "none.npz", "--out", c.sandbox / "out"], expect=("none.npz", "does not exist")),
    Case("codes-random-bytes", "codes", lambda c: ["decode", c.run, write(c, "r.npz", RANDOM), "--out", c.sandbox / "out"], expect=("r.npz", "not an ndvq codes file")),
    Case("codes-npy-not-npz", "codes", lambda c: ["decode", c.run, (lambda p: (np.save(p, np.zeros(3)), p)[1])(c.path("a.npy")), "--out", c.sandbox / "out"], expect=("a.npy", "not an ndvq codes file")),
    Case("codes-zip-of-text", "codes", lambda c: ["decode", c.run, zip_of_text(c, "z.npz"), "--out", c.sandbox / "out"], expect=("z.npz", "lacks the key")),
    Case("codes-object-names", "codes", npz_with_object_names, expect=("evil_codes.npz", "'names'", "Python objects")),
    Case("codes-no-names", "codes", codes_case(lambda a, c: a.pop("names")), expect=("bad_codes.npz", "'names'")),
    Case("codes-more-names", "codes", codes_case(lambda a, c: a.update(names=np.array(list(a["names"]) * 2), infos=np.array(list(a["infos"]) * 2))), expect=("bad_codes.npz", "input_shapes")),
    Case("codes-fewer-codes", "codes", codes_case(lambda a, c: a.update(codes=a["codes"][:1])), expect=("bad_codes.npz", "'codes'")),
    Case("codes-infos-count", "codes", codes_case(lambda a, c: a.update(infos=a["infos"][:1])), expect=("bad_codes.npz", "'infos'")),
    Case("codes-latent-shapes", "codes", codes_case(lambda a, c: a.update(latent_shapes=a["latent_shapes"] * 2)), expect=("bad_codes.npz", "'latent_shapes'")),
    Case("codes-negative-input", "codes", codes_case(lambda a, c: a.update(input_shapes=-a["input_shapes"])), expect=("bad_codes.npz", "'input_shapes'")),
    Case("codes-input-other-size", "codes", codes_case(lambda a, c: a.update(input_shapes=a["input_shapes"] * 2)), expect=("bad_codes.npz", "'latent_shapes'")),
    Case("codes-shape-transposed", "codes", codes_case(lambda a, c: a.update(codes=a["codes"][:, :4])), expect=("bad_codes.npz", "'codes'", "shape")),
    Case("codes-index-too-big", "codes", codes_case(lambda a, c: a.update(codes=a["codes"] + 1000)), expect=("bad_codes.npz", "'codes'", "outside")),
    Case("codes-index-negative", "codes", codes_case(lambda a, c: a.update(codes=a["codes"] - 1000)), expect=("bad_codes.npz", "'codes'", "outside")),
    Case("codes-float", "codes", codes_case(lambda a, c: a.update(codes=a["codes"].astype(np.float32))), expect=("bad_codes.npz", "'codes'", "integer")),
    Case("codes-fingerprint", "codes", codes_case(lambda a, c: a.update(fingerprint=np.array("0123456789abcdef"))), expect=("bad_codes.npz", "'fingerprint'")),
    Case("codes-model-class", "codes", codes_case(lambda a, c: a.update(model_class=np.array("KLVAE"))), expect=("bad_codes.npz", "KLVAE")),
    Case("codes-n-levels", "codes", codes_case(lambda a, c: a.update(n_levels=np.array(2))), expect=("bad_codes.npz", "'n_levels'")),
    Case("codes-out-is-file", "codes", lambda c: ["decode", c.run, c.codes, "--out", write(c, "outfile", "x")], expect=("outfile", "is a file")),
    # ---------------------------------------------------------------- command line
    Case("cli-batch-size-0", "cli", lambda c: ["eval", c.run, "--batch-size", "0"], expect=("--batch-size", ">= 1")),
    Case("cli-batch-size-text", "cli", lambda c: ["encode", c.run, "--batch-size", "x", "--out", c.sandbox / "a.npz"], expect=("--batch-size", "'x'")),
    Case("cli-unknown-command", "cli", lambda c: ["frobnicate"], expect=("frobnicate",)),
    Case("cli-bad-split", "cli", lambda c: ["eval", c.run, "--split", "test"], expect=("--split", "'test'")),
    Case("cli-eval-out-dir", "cli", lambda c: ["eval", c.run, "--out", c.path("od/x").parent], expect=("od", "is a folder")),
    Case("cli-encode-out-dir", "cli", lambda c: ["encode", c.run, "--out", c.path("od2/x").parent], expect=("od2", "is a folder")),
    Case("cli-eval-data-missing", "cli", lambda c: ["eval", c.run, "--data", c.sandbox / "nodata"], expect=("nodata", "does not exist")),
    Case("cli-doctor-bad-config", "cli", lambda c: ["doctor", (lambda d: (write(c, "brun/config.yaml", "model: [x\n"), write(c, "brun/metrics.jsonl", '{"step": 1}\n'), d)[2])(c.sandbox / "brun")], expect=("config.yaml",)),
    Case("cli-report-bad-config", "cli", lambda c: ["report", (lambda d: (write(c, "brun/config.yaml", "- a list\n"), write(c, "brun/metrics.jsonl", '{"step": 1}\n'), d)[2])(c.sandbox / "brun"), "--out", c.sandbox / "r.html"], expect=("config.yaml",)),
    Case("cli-doctor-not-a-run", "cli", lambda c: ["doctor", c.path("notrun/x").parent], expect=("notrun",)),
    Case("cli-doctor-config-bad-value", "cli", lambda c: ["doctor", (lambda d: (write(c, "brun/config.yaml", "model: {n_codes: -5}\n"), write(c, "brun/metrics.jsonl", '{"step": 1, "split": "train"}\n'), d)[2])(c.sandbox / "brun")], expect=("model.n_codes=-5",)),
    Case("resume-garbage-metrics-lines", "run", resume_with_garbage_metrics, code=0, handled=True, expect=("metrics.jsonl", "2 malformed line(s) skipped")),
    # ---------------------------------------------------------------- environment
    Case("env-home-unwritable", "env", unwritable_home, code=0, handled=True, expect=()),
]
