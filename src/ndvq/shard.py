"""``ndvq shard``: a data folder as WebDataset tar shards for streaming (``data.shards``).

    ndvq shard DIR --out OUT [--max-size 1GB] [--max-count N] [--split train+val|all] [-c CONFIG] [data.key=value ...]

The folder is read as training reads it (``data.kind`` and the other ``data.*`` options from ``-c CONFIG``
and/or overrides: layouts, extensions, channels, segment length ...). The train split goes to ``OUT/shard-000000.tar ...``
and the val split to ``OUT/val/shard-000000.tar ...`` (``--split all``: every file in ``OUT``), each with
a ``manifest.json``. Each sample keeps the file's original bytes and a JSON member with its name and
metadata; the format is described in :mod:`ndvq.data.shards` and docs/shards.md.

Example:
    >>> import tempfile, numpy as np                                           # doctest: +SKIP
    >>> m = shard_folder("photos/", "shards/", ["data.kind=image"], max_size="500MB")  # doctest: +SKIP
    >>> m["train"]["samples"], [s["name"] for s in m["train"]["shards"]]       # doctest: +SKIP
    (90, ['shard-000000.tar'])
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path

from ndvq.data.shards import FORMAT, MANIFEST, META, file_ext, jsonable, parse_size
from ndvq.errors import ConfigError, DataError

__all__ = ["write_shards", "shard_folder", "register"]

SPLIT_MODES = ("train+val", "all")


def dataset_facts(ds) -> dict:
    """What every file of ``ds`` shares and a single file cannot tell: channels, audio sample rate,
    series statistics (they are passed to the per-file decoders at read time)."""
    facts = {"channels": int(ds.channels), "n_dims": int(ds.n_dims)}
    if getattr(ds, "sample_rate", None):
        facts["sample_rate"] = int(ds.sample_rate)
    if getattr(ds, "stats", None) is not None and ds.modality == "series":
        facts["stats"] = jsonable({**ds.stats, "columns": list(ds.columns)})
    return facts


def _files_items(ds) -> list[tuple[Path, list[int]]]:
    """``[(file, [item indices])]`` of ``ds`` in index order (no file is read)."""
    out: dict[str, tuple[Path, list[int]]] = {}
    for i in range(len(ds)):
        p = ds._path(i)
        out.setdefault(str(p), (Path(p), []))[1].append(i)
    return list(out.values())


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime = len(data), 0o444, 0  # reproducible shards
    tar.addfile(ti, io.BytesIO(data))


class _ShardSink:
    """Rolls over to a new ``shard-%06d.tar`` when the next sample would pass ``max_size`` bytes or
    ``max_count`` samples; records each shard's counts."""

    def __init__(self, out: Path, max_size: int, max_count: int | None):
        self.out, self.max_size, self.max_count = out, max_size, max_count
        self.shards: list[dict] = []
        self.tar = None

    def write(self, members: list[tuple[str, bytes]], items: int) -> None:
        size = sum(512 + -(-len(d) // 512) * 512 for _, d in members)  # tar header + data padded to 512
        cur = self.shards[-1] if self.shards else None
        full = cur is not None and cur["samples"] and (cur["bytes"] + size > self.max_size or
                                                      (self.max_count and cur["samples"] >= self.max_count))
        if cur is None or full:
            self.close()
            cur = {"name": f"shard-{len(self.shards):06d}.tar", "samples": 0, "items": 0, "bytes": 1024}
            self.shards.append(cur)
            self.tar = tarfile.open(self.out / cur["name"], "w", format=tarfile.USTAR_FORMAT)
        for name, data in members:
            _add(self.tar, name, data)
        cur["samples"], cur["items"], cur["bytes"] = cur["samples"] + 1, cur["items"] + items, cur["bytes"] + size

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.tar = None


def write_shards(ds, root, out, *, max_size: int | str = "1GB", max_count: int | None = None,
                 options: dict | None = None) -> dict:
    """Write the files of the folder dataset ``ds`` as tar shards ``out/shard-000000.tar ...`` plus
    ``out/manifest.json``; returns the manifest.

    Args:
        ds: a :class:`ndvq.data.common.FileDataset` of one split (its usable files are written, in order).
        root: the data folder (member names are stored relative to it).
        out: output folder (created; one that already holds ``shard-*.tar`` is an error).
        max_size: bytes per shard (``"1GB"``, ``"500MB"`` or a number). Default ``"1GB"``. A single larger
            file gets a shard of its own.
        max_count: samples (files) per shard. Default None: no limit.
        options: the ``data.*`` options the dataset was built with (recorded). Default None.
    """
    out, root = Path(out), Path(root)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("shard-*.tar")):
        raise DataError(f"{str(out)!r} already holds shards; choose an empty --out folder")
    sink = _ShardSink(out, parse_size(max_size), max_count)
    try:
        for n, (path, idx) in enumerate(_files_items(ds)):
            key = f"{n:08d}"
            rel = os.path.relpath(path, root)
            meta = {"key": key, "name": Path(path if rel.startswith("..") else rel).as_posix(),
                    "modality": ds.modality, "items": len(idx), "info": jsonable(ds.item_info(idx[0]))}
            meta["info"].pop("path", None)
            sink.write([(f"{key}.{file_ext(path.name)}", path.read_bytes()),
                        (f"{key}.{META}", json.dumps(meta).encode())], len(idx))
    finally:
        sink.close()
    manifest = {"format": FORMAT, "version": 1, "modality": ds.modality, "split": ds.split, "root": str(root),
                "layout": ds.layout, "dataset": dataset_facts(ds), "options": jsonable(options or {}),
                "samples": sum(s["samples"] for s in sink.shards), "items": sum(s["items"] for s in sink.shards),
                "shards": sink.shards, "skipped": ds.skipped, "notes": list(ds.notes)}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def shard_folder(root, out, overrides=(), *, max_size: int | str = "1GB", max_count: int | None = None,
                 split: str = "train+val", config=None) -> dict:
    """Shards of the folder ``root`` read with the ``data.*`` ``overrides``; returns ``{split: manifest}``.

    Args:
        root: the data folder (``data.root``).
        out: output folder: train shards in it, val shards in ``out/val`` (``split="train+val"``).
        overrides: ``data.key=value`` strings (``data.kind`` is required). Default ().
        max_size, max_count: shard limits (:func:`write_shards`). Defaults ``"1GB"``, None.
        split: ``"train+val"`` (the folder's own split) or ``"all"`` (every file in ``out``). Default
            ``"train+val"``.
        config: a config file whose ``data`` section is the base of ``overrides``. Default None: the
            schema's defaults.
    """
    from ndvq import build
    from ndvq.config import load_config

    if split not in SPLIT_MODES:
        raise ConfigError(f"--split must be one of {SPLIT_MODES}, got {split!r}")
    bad = [o for o in overrides if not str(o).startswith("data.")]
    if bad:
        raise ConfigError(f"ndvq shard takes data.* options only, got {bad}")
    base = {"data": load_config(config).data.model_dump(mode="json")} if config is not None else {}
    cfg = load_config(None, [*overrides, f"data.root={root}", "data.shards=null"], base=base)
    if cfg.data.kind == "samples":
        raise ConfigError("ndvq shard needs data.kind=image|video|audio|series|volume")
    options = {k: v for k, v in cfg.data.model_dump().items() if k not in ("shards", "val_shards")}
    out, manifests = Path(out), {}
    with tempfile.TemporaryDirectory() as stats:  # series statistics of the train split (for the val split)
        for name in (("all",) if split == "all" else ("train", "val")):
            ds = build.build_dataset(cfg, name, stats) if name != "val" else _val_split(cfg, stats)
            if ds is None:
                continue
            where = out / "val" if name == "val" else out
            manifests[name] = write_shards(ds, cfg.data.root, where, max_size=max_size, max_count=max_count,
                                           options=options)
    return manifests


def _val_split(cfg, stats):
    """The folder's val split, None when it has none (``train_split=1``, a single file split by position)."""
    from ndvq import build

    ds = build.build_dataset(cfg, "val", stats)
    return ds if len(ds) and not getattr(ds, "single_file", False) else None


def register(subparsers) -> None:
    """Add ``ndvq shard`` to an argparse subparsers object (``ndvq.cli`` calls this)."""
    p = subparsers.add_parser(
        "shard", help="write a data folder as WebDataset tar shards (data.shards)",
        description="Write the files of a data folder, read as training reads it, into WebDataset tar shards "
                    "(original bytes + a JSON member of metadata per file) with a manifest.json of counts; "
                    "train with data.shards=OUT/shard-{000000..000009}.tar. See docs/shards.md.",
        epilog="examples:\n  ndvq shard photos/ --out shards/ data.kind=image\n"
               "  ndvq shard recordings/ --out shards/ --max-size 500MB data.kind=audio data.sample_rate=16000",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, metavar="DIR", help="the data folder")
    p.add_argument("--out", type=Path, required=True, help="output folder (train shards; val shards in OUT/val)")
    p.add_argument("--max-size", default="1GB", help="bytes per shard, e.g. 1GB, 500MB (default 1GB)")
    p.add_argument("--max-count", type=int, default=None, help="files per shard (default: no limit)")
    p.add_argument("-c", "--config", type=Path, help="take the data.* options from this config file (e.g. the one "
                   "you will train with); overrides apply on top")
    p.add_argument("--split", choices=SPLIT_MODES, default="train+val",
                   help="train+val: the folder's own split, val shards in OUT/val (default); all: every file")
    p.add_argument("overrides", nargs="*", metavar="data.key=value", help="data options, e.g. data.kind=image")
    p.set_defaults(func=_cmd_shard)


def _cmd_shard(args) -> int:
    manifests = shard_folder(args.root, args.out, args.overrides, max_size=args.max_size, max_count=args.max_count,
                             split=args.split, config=args.config)
    for name, m in manifests.items():
        where = Path(args.out) / ("val" if name == "val" else "")
        print(f"{name}: {m['samples']} file(s), {m['items']} item(s) in {len(m['shards'])} shard(s) "
              f"under {where} ({sum(s['bytes'] for s in m['shards']) / 1e6:.1f} MB)"
              + (f"; {len(m['skipped'])} unreadable file(s) skipped" if m["skipped"] else ""))
    return 0
