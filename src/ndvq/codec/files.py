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
from ndvq.codec.coding import decode_tokens, encode_tokens, static_bits
from ndvq.codec.format import SUFFIX, header_bytes, pack, unpack
from ndvq.codec.histogram import (
    AdaptiveHistogram,
    HistogramModel,
    adaptive_bits,
    histogram_for_run,
    pack_counts,
    token_counts,
    unpack_counts,
)
from ndvq.codec.levels import FirstLevels, check_levels
from ndvq.data.common import quiet_data, warn_data
from ndvq.errors import CodesError, ConfigError, DataError
from ndvq.prior.layout import TokenLayout, layout_for
from ndvq.run.codesfile import codes_fingerprint
from ndvq.run.infer import (
    data_config,
    decode_whole,
    encode_whole,
    load_run_model,
    out_stem,
    piece_length,
)
from ndvq.run.rundir import atomic_write

__all__ = ["compress_files", "decompress_files", "read_codes", "token_model_for", "PRIORS"]

PRIORS = ("auto", "prior", "none")
"""``prior=``: the run's prior when it has one else the histogram; the prior (an error without one); the histogram."""


def token_model_for(run_dir, prior: str = "auto", loaded=None, fingerprint: str | None = None):
    """The probability model of a run's codes: ``(TokenModel, {"kind", "fingerprint", "block"})``.

    ``prior="auto"`` uses the run's prior (``ndvq.prior.load_token_model(run_dir)``) when it has a trained
    one, else the code histogram; ``"none"`` forces the histogram; ``"prior"`` requires the prior.

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
        found = ndvq.prior.load_token_model(run_dir)  # looked up at call time: tests put a fake prior there
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


def _jsonable(info: dict) -> dict:
    """``item_info`` as JSON values: arrays to lists, other objects to text."""
    plain = (int, float, str, bool, list, dict, type(None))
    return {k: v.tolist() if hasattr(v, "tolist") else v if isinstance(v, plain) else str(v) for k, v in (info or {}).items()}


def _layout(model, spatial, block, levels: int | None) -> TokenLayout:
    lay = layout_for(model, tuple(spatial), None if block is None else tuple(block))
    if levels is None:
        return lay
    return TokenLayout(lay.grid_shapes, [c[:levels] for c in lay.columns], None if block is None else tuple(block),
                       lay.column_axis)


def _link_inputs(files: list[Path], tmp: Path, failed: list[tuple[int, str]]) -> dict[str, int]:
    """Symlinks ``tmp/<i>/<name>`` to the inputs; ``{link path: input index}``; a missing input adds
    ``(input index, a line naming it)`` to ``failed``."""
    where = {}
    for i, f in enumerate(files):
        if not f.is_file():
            failed.append((i, f"input {str(f)!r} does not exist" if not f.exists() else f"input {str(f)!r} is not a file"))
            continue
        (tmp / f"{i:06d}").mkdir()
        link = tmp / f"{i:06d}" / f.name
        link.symlink_to(f.resolve())
        where[str(link)] = i
        where.setdefault(str(f.resolve()), i)  # a dataset that resolves links names the file itself
    return where


def _not_compressed(failed: list[tuple[int, str]], rest: str) -> DataError:
    """The error for the inputs not compressed (``failed``: ``(input index, line)``), the others warned about
    in input order, the last in the error line, followed by ``rest`` (what was written)."""
    lines = [line for _, line in sorted(failed)]
    for line in lines[:-1]:
        warn_data(line)
    more = f" (and {len(lines) - 1} more input(s) not compressed, named above)" if len(lines) > 1 else ""
    return DataError(f"{lines[-1]}{more}; {rest}")


def _items(loaded, files: list[Path], overrides, failed: list[tuple[int, str]]):
    """``(input index, item, info, dataset, config)`` for every readable input file, in input order; each one
    that cannot be compressed (missing, unreadable, not of the run's data kind) adds ``(input index, a line
    naming it)`` to ``failed``."""
    model = loaded.model
    # the data layer's lines naming the temporary links are left out: compress names those inputs by their paths
    with tempfile.TemporaryDirectory(prefix="ndvq-compress-") as tmp, quiet_data(naming=tmp):
        where = _link_inputs(files, Path(tmp), failed)
        if not where:
            raise _not_compressed(failed, "nothing written")
        cfg = data_config(loaded.config, Path(tmp), overrides)
        try:
            ds = build.build_dataset(cfg, "all", stats_dir=loaded.run_dir, pad_multiple=model.downsample)
        except DataError as e:  # no input is usable: the error in the inputs' own names
            for _, line in sorted(failed):
                warn_data(line)
            text = str(e).replace(f"{str(tmp)!r}", "the inputs")
            for link, i in where.items():
                text = text.replace(link, str(files[i]))
            raise DataError(text) from None
        build.check_data_fits_model(cfg, ds, model, trained=True)
        found = {}
        for j in range(len(ds)):
            info = ds.item_info(j) if hasattr(ds, "item_info") else {}
            i = where.get(str(info.get("path")))
            if i is not None and i not in found:
                found[i] = (j, info)
        unreadable = {where.get(path): why for path, why in getattr(ds, "skipped", [])}
        article, linked = "an" if ds.modality[:1] in "aeiou" else "a", set(where.values())
        for i, f in enumerate(files):
            if i not in found:  # missing (named by _link_inputs), skipped by the scan (say why), or another kind
                if i in linked:
                    failed.append((i, f"{str(f)!r} could not be read: {unreadable[i]}" if i in unreadable else
                                   f"{str(f)!r} is not {article} {ds.modality} file this run reads (data.kind="
                                   f"{cfg.data.kind!r}, extensions {cfg.data.extensions or 'default'})"))
                continue
            j, info = found[i]
            n_skipped = len(getattr(ds, "skipped", []))
            item = ds.try_item(j) if hasattr(ds, "try_item") else ds[j]
            if item is None:
                why = ds.skipped[-1][1] if len(ds.skipped) > n_skipped else "unreadable"
                failed.append((i, f"{str(f)!r} could not be read: {why}"))
                continue
            item.setdefault("valid", torch.tensor(item["data"].shape[1:], dtype=torch.long))
            yield i, item, info, ds, cfg


def _header(loaded, item: dict, *, fp: str, meta: dict, info: dict, name: str, modality: str, chunk: int | None,
            levels: int | None) -> dict:
    """The JSON header of one compressed item (see docs/compression.md): what decoding needs, defaults left out."""
    header = {"run": str(Path(loaded.path).resolve()), "fingerprint": fp,
              "probability_model": {k: meta[k] for k in ("kind", "fingerprint", "counts", "strength") if k in meta},
              "modality": modality, "name": name, "input_shape": [int(item["data"].shape[0]), *item["valid"].tolist()],
              "padded_shape": [int(s) for s in item["data"].shape[1:]],
              "info": {k: v for k, v in _jsonable(info).items() if k != "path"}}  # the path is the name
    optional = {"block": meta["block"], "levels": levels, "chunk": int(chunk or 0)}
    return {**header, **{k: v for k, v in optional.items() if v}}


#: Prior weights (in tokens, times the column's codebook size) the adaptive histogram is tried with.
ADAPTIVE_STRENGTHS = (0.0625, 0.25, 1.0, 4.0)
#: Most ``tokens x codebook size`` entries the adaptive histogram's encoder tables may take (128 MB as float64).
ADAPTIVE_MAX_ENTRIES = 1 << 24


def _candidates(lay: TokenLayout, tokens: list[torch.Tensor], token_model, meta: dict) -> list[tuple]:
    """``[(ideal payload bits, model, probability-model meta)]`` to code one item with: a prior alone; for
    the histogram, the run histogram, the file's own (its counts go into the header) and the adaptive
    histogram at a few prior strengths (:data:`ADAPTIVE_STRENGTHS`; when its tables fit
    :data:`ADAPTIVE_MAX_ENTRIES`)."""
    if meta["kind"] != "histogram":
        return [(0.0, token_model, meta)]
    counts = token_counts(lay, tokens)
    own = HistogramModel(counts, smoothing=0)
    options = [(static_bits(lay, tokens, token_model), token_model, meta),
               (static_bits(lay, tokens, own), own,
                {**meta, "kind": "file-histogram", "fingerprint": None, "counts": pack_counts(counts)})]
    k = max(len(c) for c in token_model.counts)
    if sum(len(t) for t in tokens) * k <= ADAPTIVE_MAX_ENTRIES:
        for w in ADAPTIVE_STRENGTHS:
            strength = float(w * k)
            options.append((adaptive_bits(lay, tokens, token_model, strength), AdaptiveHistogram(token_model, strength),
                            {**meta, "kind": "adaptive", "strength": strength}))
    return options


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

    Raises:
        DataError: an input could not be compressed (unreadable, or not of the run's data kind), raised after
            the other inputs were written; it names that input (others are warned about by name).
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
    written, used, failed = [], set(), []
    device = next(model.parameters()).device
    for i, item, info, ds, cfg in _items(loaded, files, overrides, failed):
        chunk = piece_length(cfg, ds, model)
        grids = [g[0].cpu() for g in encode_whole(model, item["data"][None].to(device), chunk)]  # [*L(, G)] each
        if levels is not None:
            grids = [g[..., :levels] for g in grids]
        lay = _layout(model, item["data"].shape[1:], meta["block"], levels)
        tokens = lay.flatten(grids)
        sized = []  # the smallest file: ideal payload bits + the header as stored
        for bits, coder, item_meta in _candidates(lay, tokens, token_model, meta):
            header = _header(loaded, item, fp=fp, meta=item_meta, info=info, name=files[i].name,
                             modality=ds.modality, chunk=chunk, levels=levels)
            sized.append((bits + 8 * len(header_bytes(header)), coder, header))
        _, coder, header = min(sized, key=lambda c: c[0])
        words = encode_tokens(lay, tokens, coder)
        path = out_dir / f"{out_stem(files[i].name, i, used)}{SUFFIX}"
        blob = pack(header, words)
        atomic_write(path, lambda fh, blob=blob: fh.write(blob))
        written.append(path)
    if failed:  # the others are written: one bad input costs only itself
        raise _not_compressed(failed, f"the other {len(written)} file(s) were compressed into {str(out_dir)!r}"
                              if written else "nothing written")
    return written


# ------------------------------------------------------------------------------------ decompress
_HEADER_KEYS = {"fingerprint": str, "probability_model": dict, "modality": str, "name": str, "input_shape": list,
                "padded_shape": list}
#: Keys a header may leave out (format version 2 omits the defaults), with their defaults.
_HEADER_DEFAULTS = {"run": None, "chunk": 0, "info": {}, "block": None, "levels": None}


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
    header = {**_HEADER_DEFAULTS, **header}
    for key, kind in (("run", str), ("chunk", int), ("info", dict)):
        if header[key] is not None and not isinstance(header[key], kind):
            raise CodesError(f"{where}: its header's {key!r} is not a {kind.__name__}")
    header["info"] = {**header["info"], "path": header["name"]}
    return header, words


class _Runs:
    """Loaded runs by checkpoint path, with their fingerprints and probability models (loaded once)."""

    def __init__(self, override=None) -> None:
        self.override, self._runs, self._models = override, {}, {}

    def model_for(self, header: dict, where: str):
        key = str(self.override) if self.override is not None else header["run"]
        if key is None:
            raise CodesError(f"{where} does not name the run that compressed it; pass the run with --run RUN")
        if key not in self._runs:
            if self.override is None and not Path(key).exists():
                raise CodesError(f"{where} was compressed with the run {key!r}, which does not exist here; pass "
                                 "the run with --run RUN")
            loaded = load_run_model(key)
            self._runs[key] = (loaded, codes_fingerprint(loaded.model))
        loaded, fp = self._runs[key]
        if header["fingerprint"] != fp or header.get("model_class", type(loaded.model).__name__) != type(loaded.model).__name__:
            raise CodesError(f"{where} was compressed by another model (fingerprint {header['fingerprint']}) than "
                             f"{key!r} ({fp}, {type(loaded.model).__name__}): another run or checkpoint; decompress "
                             "it with the checkpoint that compressed it (--run)")
        return key, loaded, fp

    def token_model(self, key: str, header: dict, where: str):
        loaded, fp = self._runs[key]
        want = header["probability_model"]
        kind = want.get("kind")
        if kind == "file-histogram":
            return _file_histogram(header, loaded.model, where)
        base = "histogram" if kind == "adaptive" else kind
        if (key, base) not in self._models:
            if kind not in ("prior", "histogram", "adaptive"):
                raise CodesError(f"{where}: unknown probability model {kind!r} in its header")
            self._models[(key, base)] = token_model_for(loaded.run_dir, "prior" if kind == "prior" else "none",
                                                        loaded=loaded, fingerprint=fp)
        model, meta = self._models[(key, base)]
        if meta["fingerprint"] != want.get("fingerprint"):
            raise CodesError(f"{where} was coded with the {base} {want.get('fingerprint')}, the run's {base} is "
                             f"{meta['fingerprint']} (retrained since?); it cannot be decoded")
        if kind == "adaptive":
            strength = want.get("strength")
            if not isinstance(strength, (int, float)) or not strength > 0:
                raise CodesError(f"{where}: its header's adaptive strength {strength!r} is not a positive number")
            return AdaptiveHistogram(model, float(strength))  # fresh per file: it learns while decoding
        return model


def _file_histogram(header: dict, model, where: str) -> HistogramModel:
    """The file's own histogram from its header (per kept column of the model's codebook sizes)."""
    sizes, levels = list(model.codebook_sizes), header.get("levels")
    try:
        sizes = [int(k) for k in (sizes if levels is None else sizes[:int(levels)])]
        return HistogramModel(unpack_counts(str(header["probability_model"]["counts"]), sizes), smoothing=0)
    except (KeyError, TypeError, ValueError) as e:
        raise CodesError(f"{where}: its header's code counts are unreadable: {e}") from None


def _grids(header: dict, words: np.ndarray, loaded, token_model, where: str) -> list[torch.Tensor]:
    model, levels, block = loaded.model, header.get("levels"), header.get("block")
    if not (block is None or isinstance(block, list) and all(isinstance(b, int) and b > 0 for b in block)):
        raise CodesError(f"{where}: its header's 'block' {block!r} is not a list of positive integers")
    try:
        check_levels(model, levels)
    except (ConfigError, TypeError) as e:
        raise CodesError(f"{where}: its header's 'levels' {levels!r} does not fit the model: {e}") from None
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
        written += _write_decoded(header, recon, out_dir, out_stem(header["name"], i, used))
    return written
