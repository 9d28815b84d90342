"""``ndvq compress`` / ``ndvq decompress``: whole files <-> ``.ndvq`` files (one per input).

Compress loads each input whole, as ``ndvq encode`` does (the run's data config with ``data.root`` set to
the inputs; a run trained on the built-in samples reads images, 3 channels), encodes it with
:func:`ndvq.run.infer.encode_whole`, keeps the first ``levels`` residual levels, orders the codes with
:func:`ndvq.prior.layout_for` and entropy-codes them under the run's prior or its code histogram
(:func:`token_model_for`). The header (:mod:`ndvq.codec.format`) holds everything decompress needs: the run
it came from and the model's fingerprint, the probability model's kind and fingerprint, the layout block,
the levels, the modality, the name, the real and padded shapes, the piece length and the dataset's
``item_info`` (rate, affine, normalisation), as ``ndvq encode`` stores them. Decompress checks every file
before it decodes any and writes each output under a temporary name that is renamed when complete.

Example:
    >>> outs = compress_files("runs/my-run", ["photo.png"], "packed/")   # doctest: +SKIP
    >>> decompress_files(outs, "restored/")                               # doctest: +SKIP
    [PosixPath('restored/photo.png')]
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ndvq import build
from ndvq.codec.coding import decode_tokens, encode_tokens
from ndvq.codec.entropy import PRECISION
from ndvq.codec.format import SUFFIX, VERSION, pack, unpack
from ndvq.codec.histogram import histogram_for_run
from ndvq.codec.levels import FirstLevels, check_levels
from ndvq.config import apply_overrides, config_to_dict, parse_overrides, validate_config
from ndvq.errors import CodesError, ConfigError, DataError
from ndvq.prior.layout import TokenLayout, layout_for
from ndvq.run.codesfile import codes_fingerprint
from ndvq.run.infer import _chunk, _out_stem, decode_whole, encode_whole, load_run_model

__all__ = ["compress_files", "decompress_files", "read_codes", "token_model_for", "PRIORS"]

PRIORS = ("auto", "prior", "none")
"""``prior=``: the run's prior when it has one else the histogram; the prior (an error without one); the histogram."""


def token_model_for(run_dir, prior: str = "auto", loaded=None, fingerprint: str | None = None):
    """The probability model of a run's codes: ``(TokenModel, {"kind", "fingerprint", "block"})``.

    ``prior="auto"`` uses ``ndvq.prior.load_token_model(run_dir)`` when that function exists and returns a
    model, else the code histogram; ``"none"`` forces the histogram; ``"prior"`` requires the prior.

    Args:
        run_dir: the run directory.
        prior: ``"auto" | "prior" | "none"``. Default ``"auto"``.
        loaded: the run's loaded model (needed for the histogram). Default None: loaded here.
        fingerprint: the model's codes fingerprint (keys the stored histogram). Default None: computed.
    """
    import ndvq.prior

    if prior not in PRIORS:
        raise ConfigError(f"prior must be one of {PRIORS}, got {prior!r}")
    if prior != "none":
        load = getattr(ndvq.prior, "load_token_model", None)  # the integrator makes this a plain import
        found = load(run_dir) if load is not None else None
        if found is not None:
            model, meta = found
            block = meta.get("block")
            return model, {"kind": "prior", "fingerprint": str(meta["fingerprint"]),
                           "block": None if block is None else [int(b) for b in block]}
        if prior == "prior":
            raise ConfigError(f"run {str(run_dir)!r} has no trained prior (train one with `ndvq prior RUN`), "
                              "or compress with --prior none")
    loaded = loaded or load_run_model(run_dir)
    hist = histogram_for_run(loaded, fingerprint or codes_fingerprint(loaded.model))
    return hist, {"kind": "histogram", "fingerprint": hist.fingerprint, "block": None}


def _files_config(cfg, root: Path, overrides) -> object:
    """The run's config reading whole files from ``root`` (built-in samples -> RGB images)."""
    d = config_to_dict(cfg)
    d["data"].update(root=str(root), val_dir=None)
    if d["data"]["kind"] == "samples":
        d["data"].update(kind="image", channels=3)
    return validate_config(apply_overrides(d, parse_overrides(list(overrides))))


def _jsonable(info: dict) -> dict:
    out = {}
    for k, v in (info or {}).items():
        out[k] = v.tolist() if hasattr(v, "tolist") else v if isinstance(v, (int, float, str, bool, list, type(None))) else str(v)
    return out


def _layout(model, spatial, block, levels: int | None) -> TokenLayout:
    lay = layout_for(model, tuple(spatial), None if block is None else tuple(block))
    if levels is None:
        return lay
    return TokenLayout(lay.grid_shapes, [c[:levels] for c in lay.columns], None if block is None else tuple(block),
                       lay.column_axis)


def _link_inputs(files: list[Path], tmp: Path) -> dict[str, int]:
    """Symlinks ``tmp/<i>/<name>`` to the inputs; ``{link path: input index}``."""
    where = {}
    for i, f in enumerate(files):
        if not f.is_file():
            raise DataError(f"input {str(f)!r} does not exist" if not f.exists() else f"input {str(f)!r} is not a file")
        (tmp / f"{i:06d}").mkdir()
        link = tmp / f"{i:06d}" / f.name
        link.symlink_to(f.resolve())
        where[str(link)] = i
    return where


def _items(loaded, files: list[Path], overrides):
    """``(input index, item, info, dataset, config)`` for every input file, in input order."""
    model = loaded.model
    with tempfile.TemporaryDirectory(prefix="ndvq-compress-") as tmp:
        where = _link_inputs(files, Path(tmp))
        cfg = _files_config(loaded.config, Path(tmp), overrides)
        ds = build.build_dataset(cfg, "all", stats_dir=loaded.run_dir, pad_multiple=model.downsample)
        build.check_data_fits_model(cfg, ds, model)
        found = {}
        for j in range(len(ds)):
            info = ds.item_info(j) if hasattr(ds, "item_info") else {}
            i = where.get(str(info.get("path")))
            if i is not None and i not in found:
                found[i] = (j, info)
        missing = [str(f) for i, f in enumerate(files) if i not in found]
        if missing:
            raise DataError(f"{missing[0]!r} is not a {ds.modality} file this run reads (data.kind="
                            f"{cfg.data.kind!r}, extensions {cfg.data.extensions or 'default'})")
        for i, f in enumerate(files):
            j, info = found[i]
            item = ds.try_item(j) if hasattr(ds, "try_item") else ds[j]
            if item is None:
                raise DataError(f"{str(f)!r} could not be read: {ds.skipped[-1][1] if ds.skipped else 'unreadable'}")
            item.setdefault("valid", torch.tensor(item["data"].shape[1:], dtype=torch.long))
            yield i, item, info, ds, cfg


def _header(loaded, fp, meta, item, info, name, ds, chunk, levels) -> dict:
    model = loaded.model
    return {"format": "ndvq", "version": VERSION, "run": str(Path(loaded.path).resolve()),
            "model_class": type(model).__name__, "fingerprint": fp,
            "probability_model": {"kind": meta["kind"], "fingerprint": meta["fingerprint"]},
            "coder": {"name": "constriction.stream.stack.AnsCoder", "precision": PRECISION},
            "block": meta["block"], "levels": levels, "codebook_sizes": [int(k) for k in model.codebook_sizes],
            "modality": ds.modality, "name": name, "input_shape": [int(item["data"].shape[0]), *item["valid"].tolist()],
            "padded_shape": [int(s) for s in item["data"].shape[1:]], "chunk": int(chunk or 0),
            "info": {**_jsonable(info), "path": name}}


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@torch.no_grad()
def compress_files(run, files, out_dir, levels: int | None = None, prior: str = "auto", overrides=()) -> list[Path]:
    """Write one ``.ndvq`` file per input file (``photo.png -> out_dir/photo.ndvq``); returns their paths.

    Args:
        run: run directory or checkpoint (a model with discrete codes).
        files: the input files (any format the run's data kind reads).
        out_dir: output folder (created).
        levels: keep the first ``levels`` residual levels (residual quantizers only). Default None: all.
        prior: ``"auto" | "prior" | "none"`` (:func:`token_model_for`). Default ``"auto"``.
        overrides: ``data.*=value`` overrides, as for ``ndvq encode``. Default ().
    """
    loaded = load_run_model(run)
    model = loaded.model
    if not model.codebook_sizes:
        raise ConfigError(f"{str(run)!r} holds a {type(model).__name__} without discrete codes; compress needs a "
                          "VQ model (a KL-VAE's latents are not entropy-coded)")
    levels = check_levels(model, levels)
    files = [Path(f) for f in files]
    fp = codes_fingerprint(model)
    token_model, meta = token_model_for(loaded.run_dir, prior, loaded=loaded, fingerprint=fp)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, used = [], set()
    device = next(model.parameters()).device
    for i, item, info, ds, cfg in _items(loaded, files, overrides):
        chunk = _chunk(cfg, ds, model)
        grids = [g[0].cpu() for g in encode_whole(model, item["data"][None].to(device), chunk)]  # [*L(, G)] each
        if levels is not None:
            grids = [g[..., :levels] for g in grids]
        lay = _layout(model, item["data"].shape[1:], meta["block"], levels)
        words = encode_tokens(lay, lay.flatten(grids), token_model)
        header = _header(loaded, fp, meta, item, info, files[i].name, ds, chunk, levels)
        path = out_dir / f"{_out_stem(files[i].name, i, used)}{SUFFIX}"
        _write_atomic(path, pack(header, words))
        written.append(path)
    return written


# ------------------------------------------------------------------------------------ decompress
_HEADER_KEYS = {"run": str, "model_class": str, "fingerprint": str, "probability_model": dict, "modality": str,
                "name": str, "input_shape": list, "padded_shape": list, "chunk": int, "info": dict,
                "codebook_sizes": list}


def _read(path: Path) -> tuple[dict, np.ndarray]:
    """The checked ``(header, words)`` of one ``.ndvq`` file."""
    where = f"{str(path)!r}"
    if not path.is_file():
        raise CodesError(f"{where} does not exist" if not path.exists() else f"{where} is not a file")
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise CodesError(f"{where} cannot be read: {e.strerror or e}") from None
    header, words = unpack(blob, where)
    for key, kind in _HEADER_KEYS.items():
        if not isinstance(header.get(key), kind):
            raise CodesError(f"{where}: its header lacks {key!r} (or it is not a {kind.__name__})")
    return header, words


class _Runs:
    """Loaded runs by checkpoint path, with their fingerprints and probability models (loaded once)."""

    def __init__(self, override=None) -> None:
        self.override, self._runs, self._models = override, {}, {}

    def model_for(self, header: dict, where: str):
        key = str(self.override) if self.override is not None else header["run"]
        if key not in self._runs:
            if self.override is None and not Path(key).exists():
                raise CodesError(f"{where} was compressed with the run {key!r}, which does not exist here; pass "
                                 "the run with --run RUN")
            loaded = load_run_model(key)
            self._runs[key] = (loaded, codes_fingerprint(loaded.model))
        loaded, fp = self._runs[key]
        if header["fingerprint"] != fp or header["model_class"] != type(loaded.model).__name__:
            raise CodesError(f"{where} was compressed by another model (fingerprint {header['fingerprint']}, "
                             f"{header['model_class']}) than {key!r} ({fp}, {type(loaded.model).__name__}): another "
                             "run or checkpoint; decompress it with the checkpoint that compressed it (--run)")
        return key, loaded, fp

    def token_model(self, key: str, header: dict, where: str):
        loaded, fp = self._runs[key]
        want = header["probability_model"]
        kind = want.get("kind")
        if (key, kind) not in self._models:
            if kind not in ("prior", "histogram"):
                raise CodesError(f"{where}: unknown probability model {kind!r} in its header")
            self._models[(key, kind)] = token_model_for(loaded.run_dir, "prior" if kind == "prior" else "none",
                                                        loaded=loaded, fingerprint=fp)
        model, meta = self._models[(key, kind)]
        if meta["fingerprint"] != want.get("fingerprint"):
            raise CodesError(f"{where} was coded with the {kind} {want.get('fingerprint')}, the run's {kind} is "
                             f"{meta['fingerprint']} (retrained since?); it cannot be decoded")
        return model


def _grids(header: dict, words: np.ndarray, loaded, token_model, where: str) -> list[torch.Tensor]:
    model, levels = loaded.model, header.get("levels")
    check = check_levels(model, levels) if levels is not None else None
    if check is None and levels is not None or not (header.get("block") is None or isinstance(header["block"], list)):
        raise CodesError(f"{where}: bad 'levels' or 'block' in its header")
    try:
        lay = _layout(model, header["padded_shape"], header.get("block"), levels)
        return lay.unflatten(decode_tokens(lay, words, token_model))
    except CodesError as e:
        raise CodesError(f"{where}: {e}") from None
    except (ValueError, RuntimeError, OverflowError) as e:
        raise CodesError(f"{where} does not decode with this model: {type(e).__name__}: {e}") from None


def read_codes(path, run=None) -> tuple[list[torch.Tensor], dict]:
    """The codes of one ``.ndvq`` file, ``([*L(, G)] long tensor per grid, header)``; with ``levels=k``
    the grids hold the first ``k`` residual columns.

    Args:
        path: the ``.ndvq`` file.
        run: the run or checkpoint to decode with. Default None: the one named in the header.
    """
    runs = _Runs(run)
    path = Path(path)
    header, words = _read(path)
    key, loaded, _ = runs.model_for(header, repr(str(path)))
    return _grids(header, words, loaded, runs.token_model(key, header, repr(str(path))), repr(str(path))), header


def _write_decoded(header: dict, recon: torch.Tensor, out_dir: Path, stem: str) -> list[Path]:
    """Write one decoded item under a temporary folder in ``out_dir``, then rename its files into place."""
    from ndvq.data import write_item

    info = dict(header["info"])
    if "affine" in info:
        info["affine"] = np.asarray(info["affine"])
    tmp = Path(tempfile.mkdtemp(prefix=".ndvq-decompress-", dir=out_dir))
    try:
        modality = header["modality"]
        parts = write_item(modality, recon if modality == "series" else recon.clamp(-1, 1), tmp / stem, info=info)
        final = [out_dir / p.relative_to(tmp) for p in parts]
        for p, f in zip(parts, final):
            f.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, f)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@torch.no_grad()
def decompress_files(paths, out_dir, run=None) -> list[Path]:
    """Decode ``.ndvq`` files into files of the modality's own format under ``out_dir`` (as ``ndvq decode``
    writes them: name, shape, rate, affine and normalisation restored); returns the written paths.

    Every file is read and checked (magic, version, length, checksum, header, model fingerprint) before
    any is decoded; an output appears only complete (written under a temporary name, then renamed).

    Args:
        paths: the ``.ndvq`` files.
        out_dir: output folder (created).
        run: the run or checkpoint to decode with. Default None: the one each header names.
    """
    runs, jobs = _Runs(run), []
    for p in (Path(p) for p in paths):
        header, words = _read(p)
        key, loaded, _ = runs.model_for(header, repr(str(p)))
        jobs.append((p, header, words, loaded, runs.token_model(key, header, repr(str(p)))))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, used = [], set()
    for i, (p, header, words, loaded, token_model) in enumerate(jobs):
        grids = _grids(header, words, loaded, token_model, repr(str(p)))
        levels = header.get("levels")
        model = FirstLevels(loaded.model, levels) if levels is not None else loaded.model
        device = next(loaded.model.parameters()).device
        recon = decode_whole(model, [g[None].to(device) for g in grids], tuple(header["padded_shape"]),
                             header["chunk"] or None)
        shape = header["input_shape"]
        recon = recon[0].float().cpu()[(slice(None), *(slice(0, s) for s in shape[1:]))]  # the real extent
        written += _write_decoded(header, recon, out_dir, _out_stem(header["name"], i, used))
    return written
