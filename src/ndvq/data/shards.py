"""WebDataset tar shards (written by ``ndvq shard``, :mod:`ndvq.shard`): the format, and streaming training
items from them (``data.shards``).

A shard is a plain tar file; each of its samples is one source file of a folder, stored as two members
that share a key (``00000017``):

* ``00000017.<ext>``: the file's original bytes (``png``, ``wav``, ``nii.gz``, ``npz``, ...), decoded at
  read time by the same decoders as the folder (nothing is lost, nothing is pickled);
* ``00000017.meta.json``: ``{"key", "name" (path relative to the folder), "modality", "items" (items the
  file gave the writer's options), "info" (the folder dataset's ``item_info`` of its first item: sample
  rate, affine, column names, normalisation statistics ...)}``.

``manifest.json`` beside the shards lists each shard's sample and item counts, the resolved facts of the
dataset that must be the same for every file (channels, the audio sample rate, the series train-split
statistics), the folder's notes and skipped files: training knows the epoch length without reading a
shard. See docs/shards.md.

Example:
    >>> from ndvq.data.shards import expand_shards
    >>> expand_shards("data/shard-{000000..000002}.tar")[-1]
    'data/shard-000002.tar'
"""

from __future__ import annotations

import glob
import itertools
import json
import logging
import os
import random
import re
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch

from ndvq.data.common import quiet_data, warn_data, warn_skip
from ndvq.errors import DataError

__all__ = ["MANIFEST", "SHARD_FIELDS", "ShardDataset", "ShardStream", "shard_dataset", "parse_size", "expand_shards",
           "read_manifest", "sample_items", "webdataset"]

MANIFEST = "manifest.json"
FORMAT = "ndvq-shards"
META = "meta.json"
_SIZE = re.compile(r"^\s*([0-9.]+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
SHARD_FIELDS = ("shards", "val_shards", "shuffle_buffer")  # the data.* fields of shards (not the folder's)
_UNITS = {"": 1, "b": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
log = logging.getLogger("ndvq.data")


def parse_size(text: str | int | float) -> int:
    """Bytes of ``"1GB"``, ``"500MB"``, ``"2GiB"``, ``"64k"`` or a plain number.

    Example:
        >>> parse_size("1GB"), parse_size("2KiB")
        (1000000000, 2048)
    """
    m = _SIZE.match(str(text))
    if not m:
        raise DataError(f"size {text!r} is not understood; use e.g. 1GB, 500MB or a number of bytes")
    unit = (m.group(2) or "").lower()
    if "i" in unit:  # KiB, MiB, ...: powers of 1024
        return int(float(m.group(1)) * 1024 ** ("kmgt".index(unit[0]) + 1))
    return int(float(m.group(1)) * _UNITS[unit[:1]])


def jsonable(v):
    """``v`` with numpy arrays / scalars and paths turned into JSON values."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    return v


def file_ext(name: str) -> str:
    """The member suffix of a file: its extension, lower case (``nii.gz`` kept whole)."""
    low = name.lower()
    return "nii.gz" if low.endswith(".nii.gz") else (Path(low).suffix.lstrip(".") or "bin")


# ---------------------------------------------------------------------------------------------- reading
def webdataset():
    """The ``webdataset`` module; its absence is a one-line error naming the extra."""
    try:
        import webdataset as wds
    except ImportError:
        raise DataError('data.shards needs the webdataset package: pip install "ndvq[shards]"') from None
    return wds


def _is_url(s: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:", s)) and not re.match(r"^[a-zA-Z]:[\\/]", s)


def expand_shards(spec) -> list[str]:
    """The shard URLs of ``data.shards``: a list, a brace pattern (``shard-{000000..000009}.tar``), a glob
    (``shards/*.tar``) or several joined by ``::``. Local paths must exist (glob / list / brace);
    URLs (``pipe:``, ``http:``, ...) are kept as they are.

    Raises:
        DataError: nothing matches (one line, naming the pattern).
    """
    expand_urls = webdataset().shardlists.expand_urls
    items = [str(s) for s in spec] if isinstance(spec, (list, tuple)) else [str(spec)]
    urls: list[str] = []
    for item in items:
        for url in expand_urls(item):
            if _is_url(url) and not url.startswith("file:"):
                urls.append(url)
                continue
            local = os.path.expanduser(url[5:] if url.startswith("file:") else url)
            if glob.has_magic(local):
                urls += sorted(glob.glob(local))
            elif os.path.isdir(local):
                urls += sorted(glob.glob(os.path.join(local, "*.tar")))
            elif os.path.isfile(local):
                urls.append(local)
            else:
                raise DataError(f"data.shards: shard {local!r} (from {item!r}) does not exist")
    if not urls:
        raise DataError(f"data.shards={spec!r}: no shard matches")
    return urls


def _folder_of(url: str) -> str:
    return url.rsplit("/", 1)[0] if "/" in url else "."


def read_manifest(where: str) -> dict | None:
    """A shards manifest: ``where`` is a ``.json`` file (a path or any URL webdataset opens) or a folder of
    shards (a path or an ``http(s):`` URL: its ``manifest.json``); None when there is none."""
    if not where.endswith(".json"):
        if _is_url(where) and not where.startswith(("http:", "https:", "file:")):
            return None
        where = where + "/" + MANIFEST
    try:
        if _is_url(where):
            with webdataset().gopen.gopen(where) as f:
                return json.loads(f.read())
        return json.loads(Path(where).read_text()) if Path(where).is_file() else None
    except Exception as e:  # noqa: BLE001 - an unreadable manifest: counted by reading instead
        warn_data(f"manifest {where!r} unreadable ({type(e).__name__}: {e}); the shards are counted instead")
        return None


def _data_member(sample: dict) -> str:
    names = [k for k in sample if not k.startswith("__") and k != META]
    if len(names) != 1:
        raise DataError(f"expected one data member beside {META}, found {names}")
    return names[0]


def sample_items(sample: dict, kind: str, options: dict, facts: dict, *, train: bool, workdir: Path):
    """The items of one shard sample, decoded by the folder dataset of ``kind`` exactly as from a folder.

    Args:
        sample: ``{"__key__", "<ext>": bytes, "meta.json": bytes}`` (as webdataset groups a tar).
        kind: ``data.kind``.
        options: the ``data.*`` options of the run (only the kind's own are used).
        facts: the manifest's ``dataset`` facts (channels, sample rate, series statistics).
        train: train-split behaviour (random crops, augmentation).
        workdir: a private temporary folder (the file is written there while it is decoded).

    Returns ``(items, (channels, data_range, value_range_text))``: each item is the folder's ``{"data",
    "index", "valid"}`` plus ``"key"`` (the sample key) and ``"item"`` (= ``"index"``: the item number
    within the file). Raises on a file that cannot be decoded.
    """
    from ndvq.data import DATASETS, KIND_OPTIONS

    meta = json.loads(sample[META])
    member = _data_member(sample)
    folder = workdir / sample["__key__"]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        (folder / Path(meta["name"]).name).write_bytes(sample[member])
        kw = {k: options[k] for k in KIND_OPTIONS[kind] if k in options}
        kw.update(root=folder, val_dir=None, train_split=1.0, subfolders=None, channels=facts.get("channels"))
        if kind == "audio":
            kw["sample_rate"] = facts.get("sample_rate") or kw.get("sample_rate")
        if kind == "video":
            kw["index_path"] = folder / "clip_index.json"
        if kind == "series" and "stats" in facts:
            (folder / "stats").mkdir(exist_ok=True)
            (folder / "stats" / "data_stats.json").write_text(json.dumps(facts["stats"]))
            kw["stats_dir"] = folder / "stats"
        split = "train" if train and kind != "series" else "all"
        with quiet_data():  # their notes were recorded by the writer; failures are reported once, by member
            try:
                ds = DATASETS[kind](split=split, **kw)
            except Exception as e:  # noqa: BLE001 - the file's header: say why, without the temporary folder
                raise DataError(str(e).replace(str(folder) + os.sep, "").replace(str(folder), ".")) from None
            items = [ds.try_item(i) for i in range(len(ds))]
        if ds.skipped or any(it is None for it in items):
            raise DataError(ds.skipped[0][1] if ds.skipped else "unreadable")
        for j, it in enumerate(items):
            it.update(key=sample["__key__"], item=j, index=j)
        return items, (int(ds.channels), ds.data_range, ds.value_range_text)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def new_workdir() -> Path:
    """A private temporary folder for decoding (in ``/dev/shm`` when there is one: no disk writes)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="ndvq-shard-", dir=base))


def _decode(sample: dict, ds: ShardDataset, train: bool, workdir: Path, seed: int):
    """:func:`sample_items` of ``ds``'s kind and options with the torch RNG seeded by ``seed`` (random crops
    and augmentation depend only on the sample and the epoch, never on the worker or on what was read
    before: exact replay)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return sample_items(sample, ds.kind, ds.options, ds.facts, train=train, workdir=workdir)


def _val_beside(shards) -> list[str] | None:
    """The ``val/`` shards ``ndvq shard`` wrote beside local train shards, else None."""
    specs = [str(x) for x in shards] if isinstance(shards, (list, tuple)) else [str(shards)]
    first = expand_shards([x for x in specs if not x.endswith(".json")])[0]
    val = Path(first).parent / "val"
    if _is_url(first) or not (val / MANIFEST).is_file():
        return None
    return sorted(str(p) for p in val.glob("*.tar")) or None


def shard_dataset(data: dict, split: str) -> ShardDataset:
    """The :class:`ShardDataset` of ``split`` for the ``data`` config section (``DataConfig.model_dump()``).

    ``train``: ``data.shards``; ``val``: ``data.val_shards``, else the ``val/`` shards ``ndvq shard``
    wrote beside local train shards, else none (no validation); ``all``: both.
    """
    options = {k: v for k, v in data.items() if k not in SHARD_FIELDS}
    val = data.get("val_shards") or (_val_beside(data["shards"]) if split != "train" else None)
    as_list = [[str(x) for x in v] if isinstance(v, (list, tuple)) else [str(v)] for v in (data["shards"], val or [])]
    spec = {"train": data["shards"], "val": val, "all": as_list[0] + (as_list[1] if val else [])}[split]
    return ShardDataset(spec, data["kind"], "train" if split == "train" else "val", options,
                        data.get("shuffle_buffer", 1000))


def _seed(*parts) -> int:
    return zlib.crc32("/".join(str(p) for p in parts).encode())


def _warn_handler(exn: BaseException) -> bool:
    """webdataset's error handler: a corrupt shard or member is skipped with a warning naming it."""
    where = [a for a in exn.args[1:] if isinstance(a, str)]
    warn_data(f"skipping unreadable shard data {where[-1] if where else ''}: {type(exn).__name__}: "
              f"{exn.args[0] if exn.args else exn}")
    return True


class ShardDataset:
    """Training items streamed from WebDataset tar shards (written by ``ndvq shard``); see docs/shards.md.

    Not a map-style dataset: the run's loader comes from :meth:`loader`. ``len()`` is the item count of
    the manifests (or of one counting pass when there is none); ``ds[i]`` and ``item_info(i)`` read the
    shards in order up to item ``i`` (start summary, sample images, diagnostics). The attributes the run reads
    (``modality``, ``n_dims``, ``channels``, ``data_range``, ``value_range_text``, ``notes``,
    ``skipped``, ``layout``, ``split``) are those of the folder dataset.

    Args:
        shards: ``data.shards`` (a list, a brace pattern, a glob; local paths or webdataset URLs).
        kind: ``data.kind`` (every file-based kind).
        split: ``"train"`` (shuffled, random crops, endless passes) or ``"val"`` (one pass in order).
            Default ``"train"``.
        options: the ``data.*`` options (the kind's own are given to its decoder). Default None.
        shuffle_buffer: items mixed in each reader's shuffle buffer (train). Default 1000.
    """

    streaming = True

    def __init__(self, shards, kind: str, split: str = "train", options: dict | None = None,
                 shuffle_buffer: int = 1000):
        from ndvq.data import DATASETS

        if kind not in DATASETS or kind == "samples":
            raise DataError(f"data.shards needs a file-based data.kind (image, video, audio, series, volume), got {kind!r}")
        cls = DATASETS[kind]
        self.kind, self.split, self.options = kind, split, dict(options or {})
        self.shuffle_buffer = max(int(shuffle_buffer), 1)
        self.modality, self.n_dims = cls.modality, cls.n_dims
        specs = [str(x) for x in shards] if isinstance(shards, (list, tuple)) else ([str(shards)] if shards else [])
        self.urls = expand_shards([x for x in specs if not x.endswith(".json")]) if specs else []
        given = [m for m in (read_manifest(x) for x in specs if x.endswith(".json")) if m]  # listed manifests
        folders = dict.fromkeys(_folder_of(u) for u in self.urls)  # else one manifest per folder of shards
        self.manifests = {d: read_manifest(d) for d in folders}
        self._given = {sh["name"]: sh for m in given for sh in m.get("shards", [])}
        found = given + [m for m in self.manifests.values() if m]
        self.manifest = found[0] if found else None
        self.facts = dict((self.manifest or {}).get("dataset") or {})
        self.notes = [n for m in found for n in m.get("notes") or []]
        self.skipped: list[tuple[str, str]] = []
        self.suggested_fix = None
        self._check_facts()
        self.samples, self.items = self._counts()
        self.layout = (f"{len(self.urls)} shard(s) from {shards!r}" if self.urls
                       else "no validation (no data.val_shards and no val/ shards beside data.shards)")
        self.files = self.urls
        self._head: list[dict] = []  # items of one pass in shard order, read on demand (ds[i])
        self._head_meta: list[dict] = []
        self._head_iter = None
        self.channels, self.data_range, self.value_range_text = self.facts.get("channels", 0), 2.0, "[-1, 1]"
        if self.urls:
            self._read_head()
            self.facts.setdefault("channels", self.channels)  # no manifest: every file as the first one

    def _check_facts(self) -> None:
        """Without a manifest, the facts a single file cannot tell must come from the config."""
        if not self.urls or self.manifest is not None:
            return
        if self.kind == "series" and self.options.get("standardize", True):
            raise DataError("series shards without their manifest.json: the train-split statistics are unknown; "
                            "list the manifest in data.shards (e.g. [\"pipe:...{000000..000009}.tar\", "
                            "\"shards/manifest.json\"]) or set data.standardize=false")
        if self.kind == "audio" and not self.options.get("sample_rate"):
            raise DataError("audio shards without their manifest.json: set data.sample_rate (or list the "
                            "manifest in data.shards)")

    def __getstate__(self) -> dict:  # loader workers started with spawn: no open shard
        return {**self.__dict__, "_head_iter": None}

    def _counts(self) -> tuple[int, int]:
        """(samples, items) of the shards: from the manifest, else by reading every shard once."""
        known = {f"{d}/{s['name']}": s for d, m in self.manifests.items() for s in (m or {}).get("shards", [])}
        entries = [known.get(f"{_folder_of(u)}/{u.rsplit('/', 1)[-1]}") or self._given.get(u.rsplit("/", 1)[-1])
                   for u in self.urls]
        if not self.urls:
            return 0, 0
        if all(entries):
            return sum(e["samples"] for e in entries), sum(e["items"] for e in entries)
        warn_data(f"no manifest.json lists the {len(self.urls)} shard(s); counting their samples by reading them")
        samples = items = 0
        for s in self._samples(self.urls):
            samples += 1
            items += int(json.loads(s[META]).get("items", 1))
        return samples, items

    @staticmethod
    def _samples(urls):
        return webdataset().tariterators.tarfile_samples([{"url": u} for u in urls], handler=_warn_handler)

    def _read_head(self, n: int = 1) -> None:
        """Decode further samples, in shard order, until ``n`` items are kept for ``ds[i]`` (or the shards
        end); the first one gives the item shape and value range."""
        if self._head_iter is None:
            self._head_iter = iter(self._samples(self.urls if self.samples else []))
        workdir = new_workdir()
        try:
            for s in self._head_iter:
                try:
                    items, info = _decode(s, self, False, workdir, 0)
                except Exception as e:  # noqa: BLE001 - a corrupt member: skipped, named
                    self._skip(s, e)
                    continue
                self.channels, self.data_range, self.value_range_text = info
                self._head += items
                self._head_meta += [json.loads(s[META])] * len(items)
                if len(self._head) >= n:
                    break
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if not self._head and self.samples:
            raise DataError(f"no readable sample in the shards {self.urls[:2]!r}")

    def _skip(self, sample: dict, e: BaseException) -> None:
        name = f"{sample.get('__url__')}:{sample.get('__key__')}"
        try:
            name += f" ({json.loads(sample[META])['name']})"
        except Exception:  # noqa: BLE001 - the metadata may be the corrupt part
            pass
        self.skipped.append((name, f"{type(e).__name__}: {e}"))
        warn_skip(name, e, what="shard member")

    # ------------------------------------------------------------------ the map-style surface the run reads
    def __len__(self) -> int:
        return self.items

    def __getitem__(self, i: int) -> dict:
        """Item ``i`` of one pass in shard order (validation decoding); the shards are read up to it and
        the items kept in memory: meant for the first items (start summary, sample images, diagnostics)."""
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        if i >= len(self._head):
            self._read_head(i + 1)
        if i >= len(self._head):
            raise IndexError(f"index {i}: the shards gave {len(self._head)} readable items")
        return self._head[i]

    def item_info(self, i: int) -> dict:
        """The writer's ``info`` of the file of head item ``i`` plus ``name``, ``key`` and ``shard``."""
        self[i]  # read up to it
        meta = self._head_meta[i]
        return {**meta.get("info", {}), "name": meta["name"], "key": meta["key"], "path": meta["name"]}

    def extent(self, i: int):
        return None

    def padding_share(self, max_items: int = 4096):
        return None

    @property
    def single_file(self) -> bool:
        return False

    def summary(self) -> str:
        shape = list(self._head[0]["data"].shape) if self._head else "?"
        skipped = f"; {len(self.skipped)} member(s) skipped: {[s[0] for s in self.skipped[:3]]}" if self.skipped else ""
        return (f"{self.modality} shards ({self.split} split, {self.layout}): {self.samples} file(s), "
                f"{self.items} item(s), item shape {shape}; values: {self.value_range_text}{skipped}")

    def note(self, text: str, warn: bool = False) -> None:
        if text not in self.notes:
            self.notes.append(text)
            if warn:
                warn_data(text)

    def loader(self, *, epoch: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
               num_workers: int = 0, skip: int = 0, train: bool = True, worker_init_fn=None):
        """The DataLoader of one epoch for this rank (see :class:`ShardStream`); ``skip``: batches of this
        rank already consumed (resume); ``worker_init_fn``: run in each loader worker. Default None."""
        stream = ShardStream(self, epoch, batch_size=batch_size, seed=seed, rank=rank, world_size=world_size,
                             skip=skip, train=train)
        if train and self.samples < world_size * max(num_workers, 1):
            raise DataError(f"{self.samples} file(s) in the shards cannot feed {world_size} rank(s) x "
                            f"{max(num_workers, 1)} loader worker(s); lower train.num_workers")
        return torch.utils.data.DataLoader(stream, batch_size=batch_size, num_workers=num_workers,
                                           drop_last=train, pin_memory=torch.cuda.is_available(),
                                           worker_init_fn=worker_init_fn)


class ShardStream(torch.utils.data.IterableDataset):
    """One epoch of one rank's items, split over the rank's loader workers.

    The ``R = world_size x workers`` readers are numbered ``g = rank x workers + worker``. With at least
    ``R`` shards, the epoch's shard order (shuffled with ``(seed, epoch)`` in training) is dealt out
    ``shards[g::R]``; with fewer shards than readers, every reader reads every shard and keeps the
    samples ``n`` with ``n % R == g``. Either way no sample goes to two readers.

    Training: each reader repeats its shards (a new order per pass) until the loop has taken its
    ``steps_per_epoch`` batches (an epoch is ``len(dataset)`` items over all ranks, as with a folder);
    the items of a pass go through a shuffle buffer of ``shuffle_buffer`` items seeded with
    ``(seed, epoch, g)`` and emptied at the end of the pass, and each file's random crops are seeded
    with ``(seed, epoch, pass, key)``. An epoch therefore gives every sample once when the readers'
    item counts are equal multiples of the batch size; otherwise a reader's last partial batch takes
    items of its next pass. The stream is a function of (seed, epoch, rank, world size, workers): a
    resumed run replays it and drops the ``skip`` batches already consumed (the loader takes batches
    from its workers in turn, so each worker drops its share and the turn continues where it
    stopped), so the items after a resume are exactly those of an uninterrupted run with the same
    world size and workers; the cost is re-reading that part of the epoch.

    Validation: one pass in shard order, no shuffle, no padding (readers may get different counts).
    """

    def __init__(self, ds: ShardDataset, epoch: int, *, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, skip: int = 0, train: bool = True):
        super().__init__()
        self.ds, self.epoch, self.batch_size, self.seed = ds, epoch, batch_size, seed
        self.rank, self.world, self.skip, self.train = rank, world_size, skip, train

    def _reader(self) -> tuple[int, int, int, int]:
        """(reader number g, readers R, this worker's place v, workers per rank). The loader takes batches
        from its workers in turn starting with worker 0; after ``skip`` batches the next one is due from
        place ``skip % n``, so a resumed loader's worker ``w`` plays place ``(w + skip) % n``."""
        info = torch.utils.data.get_worker_info()
        w, n = (info.id, info.num_workers) if info is not None else (0, 1)
        v = (w + self.skip) % n
        return self.rank * n + v, self.world * n, v, n

    def _plan(self, g: int, readers: int) -> tuple[list[str], int | None]:
        """This reader's shards and, when shards < readers, the sample stride filter's modulus."""
        urls = list(self.ds.urls)
        if self.train:
            random.Random(_seed(self.seed, self.epoch, "shards")).shuffle(urls)
        return (urls[g::readers], None) if len(urls) >= readers else (urls, readers)

    def _items(self, g: int, readers: int):
        """This reader's passes over its shards (endless in training, one for validation): each pass an
        iterator of decoded items."""
        mine, modulus = self._plan(g, readers)
        workdir = new_workdir()
        try:
            for p in itertools.count() if self.train else range(1):
                order = list(mine)
                if self.train:
                    random.Random(_seed(self.seed, self.epoch, p, g if modulus is None else -1)).shuffle(order)
                found = []
                yield self._pass(order, (modulus, g), p, workdir, found)
                if not found and self.train:
                    raise DataError(f"shard reader {g} of {readers} got no readable sample from {order[:3]}")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _pass(self, order: list[str], keep: tuple[int | None, int], p: int, workdir: Path, found: list):
        """The items of pass ``p`` over ``order``; ``keep = (modulus, g)``: only samples ``n % modulus == g``
        (when the shards are fewer than the readers); ``found`` collects the readable samples' numbers."""
        modulus, g = keep
        for n, s in enumerate(ShardDataset._samples(order)):
            if modulus is not None and n % modulus != g:
                continue
            try:
                items, _ = _decode(s, self.ds, self.train, workdir,
                                   _seed(self.seed, self.epoch, p, s.get("__url__"), s["__key__"]))
            except Exception as e:  # noqa: BLE001 - a corrupt member: skipped with a warning naming it
                self.ds._skip(s, e)
                continue
            found.append(n)
            yield from items

    def _shuffled(self, passes, g: int):
        """Items through the shuffle buffer; the buffer is emptied at the end of each pass (a pass's items
        all come before the next pass's)."""
        size = self.ds.shuffle_buffer if self.train else 1
        rng = random.Random(_seed(self.seed, self.epoch, "buffer", g))
        for items in passes:
            buf: list[dict] = []
            for it in items:
                buf.append(it)
                if len(buf) >= size:
                    k = rng.randrange(len(buf))
                    buf[k], buf[-1] = buf[-1], buf[k]
                    yield buf.pop()
            rng.shuffle(buf)
            yield from buf

    def __iter__(self):
        g, readers, v, n = self._reader()
        drop = len(range(v, self.skip, n)) * self.batch_size  # this place's share of the consumed batches
        return itertools.islice(self._shuffled(self._items(g, readers), g), drop, None)
