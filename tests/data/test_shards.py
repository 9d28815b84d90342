"""WebDataset shards (``ndvq shard``, ``data.shards``): round trip per modality, manifests, the split over
ranks and workers (in process and with 2 DDP processes), exact resume, a training run, bad inputs."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from datafiles import corrupt, write_audio, write_nifti, write_png, write_video

from ndvq.cli import main
from ndvq.config import load_config
from ndvq.data import create_dataset
from ndvq.data.shards import ShardDataset, ShardStream, expand_shards, parse_size, shard_dataset
from ndvq.errors import DataError
from ndvq.shard import shard_folder

SRC = Path(__file__).resolve().parents[2] / "src"
TINY = ["model.videogpt.n_hiddens=16", "model.videogpt.num_res_blocks=1", "model.embedding_dim=8", "model.n_codes=32",
        "model.videogpt.n_head=0", "model.videogpt.norm=group", "model.videogpt.norm_num_groups=8",
        "train.sample_interval=1000", "train.num_workers=0", "train.doctor_warnings=false", "train.loggers=[jsonl]"]


def _series(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(40)
    rows = np.stack([np.sin(t / 5 + seed) * 3 + 10, rng.normal(0, 1, 40)], axis=1)
    path.write_text("temp,load\n" + "\n".join(f"{a:.4f},{b:.4f}" for a, b in rows) + "\n")
    return path


FOLDERS = {  # kind: (writer of file n, data options without randomness)
    "image": (lambda d, n: write_png(d / "cls" / f"im{n}.png", 20 + n, 24, seed=n), ["data.resolution=[16,16]"]),
    "audio": (lambda d, n: write_audio(d / f"a{n}.wav", seconds=0.25 + 0.1 * n, rate=8000),
              ["data.segment_length=512"]),
    "series": (lambda d, n: _series(d / f"s{n}.csv", n), ["data.segment_length=16"]),
    "video": (lambda d, n: write_video(d / f"v{n}.mp4", n_frames=8), ["data.sequence_length=4",
                                                                     "data.resolution=[16,16]"]),
    "volume": (lambda d, n: write_nifti(d / f"v{n}.nii.gz", seed=n), ["data.intensity=zscore"]),
}


def _folder(tmp_path: Path, kind: str, n: int = 3) -> Path:
    root = tmp_path / "data"
    for k in range(n):
        FOLDERS[kind][0](root, k)
    return root


def _opts(kind: str, extra=()) -> dict:
    return load_config(None, [f"data.kind={kind}", *FOLDERS[kind][1], *extra], base={}).data.model_dump()


@pytest.mark.parametrize("kind", list(FOLDERS))
def test_round_trip_gives_the_folder_items_names_and_metadata(tmp_path, kind):
    root = _folder(tmp_path, kind)
    m = shard_folder(root, tmp_path / "sh", [f"data.kind={kind}", "data.train_split=1", *FOLDERS[kind][1]],
                     split="all")["all"]
    opts = _opts(kind, [f"data.shards={tmp_path / 'sh'}/shard-{{000000..000000}}.tar"])
    folder = create_dataset(**{k: v for k, v in opts.items() if k not in ("shards", "val_shards", "shuffle_buffer",
                                                                       "root", "train_split")},
                            root=root, split="all", train_split=1.0)
    assert m["samples"] == len(folder.files) == 3 and m["items"] == len(folder)
    stream = shard_dataset({**opts, "train_split": 1.0}, "all")
    got = list(stream.loader(epoch=0, batch_size=1, train=False))
    assert len(got) == len(folder) == len(stream)
    for i, b in enumerate(got):
        assert torch.equal(b["data"][0], folder[i]["data"]), (kind, i)
        assert torch.equal(b["valid"][0], folder[i]["valid"])
        assert torch.equal(stream[len(folder) - 1 - i]["data"], folder[len(folder) - 1 - i]["data"])  # ds[i]
    with pytest.raises(IndexError):
        stream[len(folder)]
    with tarfile.open(tmp_path / "sh" / "shard-000000.tar") as tar:
        metas = [json.load(tar.extractfile(n)) for n in tar.getnames() if n.endswith(".meta.json")]
    names = [Path(f).relative_to(root).as_posix() for f in folder.files]
    assert [x["name"] for x in metas] == names
    info = stream.item_info(0)
    expect = {"audio": "sample_rate", "volume": "affine", "series": "columns", "video": "fps", "image": "bit_depth"}
    assert expect[kind] in info and info["name"] == names[0], info
    if kind == "volume":
        assert np.allclose(info["affine"], folder.item_info(0)["affine"])
    if kind == "series":
        assert info["columns"] == ["temp", "load"] and np.allclose(info["mean"], folder.item_info(0)["mean"])
    if kind == "audio":
        assert info["sample_rate"] == 8000 and stream.channels == folder.channels


def test_limits_manifest_and_val_shards(tmp_path):
    root = _folder(tmp_path, "image", 10)
    m = shard_folder(root, tmp_path / "sh", ["data.kind=image", "data.resolution=[16,16]"], max_count=4)
    assert [s["samples"] for s in m["train"]["shards"]] == [4, 4, 1] and m["val"]["samples"] == 1
    assert (tmp_path / "sh" / "val" / "manifest.json").is_file()
    small = shard_folder(root, tmp_path / "sm", ["data.kind=image", "data.resolution=[16,16]"], max_size="3KB",
                         split="all")["all"]
    assert len(small["shards"]) > 3 and all(s["bytes"] <= 3000 for s in small["shards"] if s["samples"] > 1)
    assert all(os.path.getsize(tmp_path / "sm" / s["name"]) <= s["bytes"] + 10240 for s in small["shards"])
    opts = _opts("image", [f"data.shards={tmp_path}/sh/*.tar"])
    assert len(shard_dataset(opts, "train")) == 9 and len(shard_dataset(opts, "val")) == 1  # val/ beside
    both = shard_dataset(opts, "all")  # shards of two folders, same names: each counted from its own manifest
    assert len(both) == 10 and len(both.urls) == 4
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  kind: image\n  resolution: [16, 16]\n  train_split: 0.5\n")
    from_cfg = shard_folder(root, tmp_path / "c", config=cfg)  # the data section of a training config
    assert from_cfg["train"]["samples"] == 5 and from_cfg["train"]["options"]["resolution"] == [16, 16]
    assert parse_size("1GB") == 10**9 and parse_size("2MiB") == 2 * 2**20 and parse_size(512) == 512


def _keys(ds, rank, world, *, epoch=0, workers=0, batches=None, skip=0, batch=2, train=True):
    dl = ds.loader(epoch=epoch, batch_size=batch, rank=rank, world_size=world, num_workers=workers, skip=skip,
                   train=train)
    out = []
    for k, b in enumerate(dl):
        if batches is not None and k >= batches:
            break
        out += [(key, int(j), b["data"][n].sum().item()) for n, (key, j) in enumerate(zip(b["key"], b["item"]))]
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shards")
    root = tmp / "data"
    for k in range(12):
        write_png(root / f"im{k:02d}.png", 24, 24, seed=k)
    shard_folder(root, tmp / "sh", ["data.kind=image"], max_count=3, split="all")  # 4 shards of 3
    return tmp


def test_readers_are_disjoint_and_cover_the_set_shards_or_samples(images):
    opts = _opts("image", [f"data.shards={images}/sh/shard-{{000000..000003}}.tar", "data.patch_size=[8,8]"])
    ds = shard_dataset(opts, "train")
    for world in (2, 4, 3, 6):  # shard-level split (4 shards >= readers) and sample-level (6 readers > 4 shards)
        seen = [[k for k, _, _ in _keys(ds, r, world, train=False, batch=1)] for r in range(world)]
        flat = [k for s in seen for k in s]
        assert len(flat) == len(set(flat)) == 12, (world, seen)
    # training: one epoch of each rank (len // world items) covers the set when the shards divide evenly
    seen = [{k for k, _, _ in _keys(ds, r, 2, batches=3)} for r in range(2)]
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 12


def test_url_shards_stream_through_pipe_and_are_counted_without_a_manifest(images):
    spec = f"pipe:cat {images}/sh/shard-{{000000..000003}}.tar"  # a URL scheme of webdataset, no network
    assert expand_shards(spec) == [f"pipe:cat {images}/sh/shard-00000{k}.tar" for k in range(4)]
    with pytest.warns(RuntimeWarning, match="counting their samples"):
        ds = shard_dataset(_opts("image", [f"data.shards={spec}"]), "train")
    assert len(ds) == 12 and ds.channels == 3
    assert sorted(k for k, _, _ in _keys(ds, 0, 1, train=False, batch=1)) == [f"{k:08d}" for k in range(12)]
    listed = shard_dataset(_opts("image", [f"data.shards=[\"{spec}\", \"{images}/sh/manifest.json\"]"]), "train")
    assert len(listed) == 12 and listed.facts["channels"] == 3  # counts and facts from the listed manifest


def test_series_and_audio_shards_without_a_manifest_need_their_facts(tmp_path):
    for kind in ("series", "audio"):
        root = _folder(tmp_path / kind, kind, 2)
        shard_folder(root, tmp_path / kind / "sh", [f"data.kind={kind}", *FOLDERS[kind][1]], split="all")
        spec = f"pipe:cat {tmp_path / kind}/sh/shard-000000.tar"
        with pytest.raises(DataError, match="without their manifest"):
            shard_dataset(_opts(kind, [f"data.shards={spec}"]), "train")
        listed = [f"data.shards=[\"{spec}\", \"{tmp_path / kind}/sh/manifest.json\"]"]
        assert len(shard_dataset(_opts(kind, listed), "train")) > 0


def test_resume_replays_exactly_with_workers(images):
    opts = _opts("image", [f"data.shards={images}/sh/*.tar", "data.patch_size=[8,8]", "data.crop=random",
                           "data.shuffle_buffer=4"])
    ds = shard_dataset(opts, "train")
    full = _keys(ds, 0, 1, epoch=3, workers=2, batches=10)  # beyond one pass: the second pass too
    head = _keys(ds, 0, 1, epoch=3, workers=2, batches=3)
    tail = _keys(ds, 0, 1, epoch=3, workers=2, batches=7, skip=3)
    assert head + tail == full  # keys, item numbers and the random crops' pixel sums
    assert _keys(ds, 0, 1, epoch=4, workers=2, batches=6) != full[:12]  # another epoch, another order


def test_corrupt_members_are_skipped_with_a_warning_naming_them(tmp_path):
    root = _folder(tmp_path, "image", 4)
    shard_folder(root, tmp_path / "sh", ["data.kind=image", "data.resolution=[16,16]"], split="all")
    bad = tmp_path / "bad.tar"  # the same shard with member 00000001's image replaced by garbage
    with tarfile.open(tmp_path / "sh" / "shard-000000.tar") as src, tarfile.open(bad, "w") as dst:
        for ti in src.getmembers():
            data = src.extractfile(ti).read()
            if ti.name == "00000001.png":
                data = corrupt(tmp_path / "x.png").read_bytes()
                ti.size = len(data)
            dst.addfile(ti, io.BytesIO(data))
    ds = shard_dataset(_opts("image", [f"data.shards={bad}"]), "train")
    with pytest.warns(RuntimeWarning, match=r"bad\.tar:00000001 \(cls/im1\.png\)"):
        keys = [k for k, _, _ in _keys(ds, 0, 1, train=False, batch=1)]
    assert keys == ["00000000", "00000002", "00000003"]


def test_bad_inputs_are_one_line_errors(tmp_path, capsys, monkeypatch):
    with pytest.raises(DataError, match="no shard matches"):
        expand_shards(str(tmp_path / "nothing-*.tar"))
    with pytest.raises(DataError, match="does not exist"):
        expand_shards(str(tmp_path / "s-{000..001}.tar"))
    code = main(["train", f"run.root={tmp_path}", "data.kind=image", f"data.shards={tmp_path}/none-*.tar", *TINY])
    err = capsys.readouterr().err
    assert code == 2 and "no shard matches" in err and len(err.strip().splitlines()) == 1
    assert main(["shard", str(tmp_path), "--out", str(tmp_path / "o")]) == 2  # no data.kind
    assert "data.kind" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "webdataset", None)  # not installed
    with pytest.raises(DataError, match=r'pip install "ndvq\[shards\]"'):
        expand_shards(str(tmp_path / "*.tar"))


def _train_losses(run: Path) -> dict:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs if r.get("split") == "train"}


def test_cli_shard_then_train_resume_exactly_and_eval(tmp_path, capsys):
    root = _folder(tmp_path, "image", 10)
    assert main(["shard", str(root), "--out", str(tmp_path / "sh"), "--max-count", "3", "data.kind=image",
                 "data.resolution=[20,20]"]) == 0
    assert "train: 9 file(s)" in capsys.readouterr().out
    args = [f"run.root={tmp_path / 'runs'}", "data.kind=image", "data.resolution=[20,20]", "data.patch_size=[16,16]",
            f"data.shards={tmp_path}/sh/shard-{{000000..000002}}.tar", "train.batch_size=2", "data.shuffle_buffer=3",
            "train.val_interval=3", "train.ckpt_interval=3", "train.val_batches=1", "train.log_interval=1", *TINY]
    assert main(["train", *args, "run.name=r", "train.max_steps=3"]) == 0  # stops mid-epoch (4 steps per epoch)
    assert main(["train", "--resume", str(tmp_path / "runs" / "r"), "train.max_steps=7"]) == 0
    assert main(["train", *args, "run.name=u", "train.max_steps=7"]) == 0  # uninterrupted
    resumed, straight = _train_losses(tmp_path / "runs" / "r"), _train_losses(tmp_path / "runs" / "u")
    assert sorted(resumed) == sorted(straight) == list(range(1, 8))
    assert [resumed[k] for k in range(4, 8)] == pytest.approx([straight[k] for k in range(4, 8)], rel=1e-5)
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "runs" / "r")]) == 2  # eval reads a folder: says how
    assert "--data DIR" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "runs" / "r"), "--data", str(root), "--out", str(tmp_path / "e.json")]) == 0


DDP_SCRIPT = """
import json, os, sys
from types import SimpleNamespace
import torch.distributed as dist
sys.path.insert(0, {src!r})
from ndvq.config import load_config
from ndvq.build import build_dataset
from ndvq.run.session import loader

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
cfg = load_config(None, ["data.kind=image", "data.patch_size=[8,8]", "data.crop=random",
                         "data.shards={shards}", "train.batch_size=3", "train.num_workers=2", "train.seed=5"])
ds = build_dataset(cfg, "train")
s = SimpleNamespace(cfg=cfg, fabric=SimpleNamespace(global_rank=rank, world_size=world), train_ds=ds, val_ds=None)
steps = len(ds) // world // cfg.train.batch_size

def keys(epoch, skip=0, n=steps):
    out = []
    for k, b in zip(range(n), loader(s, epoch, skip=skip)):
        out += [[key, float(x.sum())] for key, x in zip(b["key"], b["data"])]
    return out

res = {{"epoch0": keys(0), "head": keys(1, 0, 1), "tail": keys(1, 1, steps - 1), "epoch1": keys(1)}}
got = [None] * world
dist.all_gather_object(got, res)
if rank == 0:
    json.dump(got, open({out!r}, "w"))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_two_ddp_processes_see_disjoint_samples_covering_the_set_and_resume(images, tmp_path):
    out = tmp_path / "seen.json"
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(src=str(SRC), shards=f"{images}/sh/shard-{{000000..000003}}.tar",
                                        out=str(out)))
    env = {**{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")},
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = json.loads(out.read_text())
    seen = [{k for k, _ in rk["epoch0"]} for rk in ranks]
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 12  # disjoint, together the whole set
    assert all(len(rk["epoch0"]) == 6 for rk in ranks)  # 4 readers (2 ranks x 2 workers), a shard of 3 each
    for rk in ranks:  # resume after one batch: the same items, the same random crops
        assert rk["head"] + rk["tail"] == rk["epoch1"]
    assert ranks[0]["epoch1"] != ranks[0]["epoch0"]


def test_fewer_shards_than_readers_split_by_sample(images):
    """Fewer shards than readers: every reader reads every shard and keeps every R-th sample."""
    ds = shard_dataset(_opts("image", [f"data.shards={images}/sh/shard-000000.tar"]), "train")
    stream = ShardStream(ds, 0, batch_size=1, rank=1, world_size=2)
    assert stream._plan(1, 2) == ([ds.urls[0]], 2)
    assert isinstance(ds, ShardDataset) and len(ds) == 3
