"""Using a trained model: ``ndvq eval``, ``ndvq encode`` and ``ndvq decode``.

A model is rebuilt from its checkpoint alone (``model_class`` + ``model_args``), loaded with
``torch.load(weights_only=True)``. Whole files are the unit: the dataset gives one item per file
(``pad_multiple`` = the model's downsampling), long 1D files and videos are processed in
non-overlapping training-window pieces whose codes are concatenated, metrics count only the real
elements (``item["valid"]``), and decode writes each file back at its own size, rate, name and
units (``ndvq.data.write_item`` with the item's ``item_info``).

Example:
    >>> metrics = evaluate("runs/my-run")                       # doctest: +SKIP
    >>> encode("runs/my-run", "codes.npz", data="photos/")      # doctest: +SKIP
    >>> decode("runs/my-run", "codes.npz", "decoded/")          # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ndvq import build
from ndvq import metrics as M
from ndvq.config import Config, apply_overrides, config_to_dict, parse_overrides, validate_config
from ndvq.data.common import valid_mask
from ndvq.errors import CheckpointError, CodesError, DataError
from ndvq.quantizers.base import usage_from_counts
from ndvq.run.checkpoint import LoadedModel
from ndvq.run.checkpoint import load_model as _load
from ndvq.run.codes import decode_grids, encode_grids, grids_of
from ndvq.run.codesfile import check_codes_file, codes_fingerprint

__all__ = ["load_run_model", "data_config", "piece_length", "out_stem", "evaluate", "encode", "decode", "format_table", "encode_whole", "decode_whole",
           "code_stats"]


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_run_model(path: str | Path) -> LoadedModel:
    """The trained model of a run (on the default device, eval mode) with its config and run directory."""
    loaded = _load(path, map_location=_device())
    if loaded.config is None:
        raise CheckpointError(f"{str(path)!r} is a pretrained folder without a run config; pass a run directory "
                              "or a .ckpt file written by ndvq train")
    return loaded


def data_config(cfg: Config, data: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The run's config reading ``data`` (a folder or file) with any ``data.*=...`` overrides applied.

    A run trained on the built-in samples (RGB photographs) reads ``data`` as RGB images unless an
    override says otherwise (``data.kind=...``).

    Args:
        cfg: the run's config.
        data: the folder (or file) to read; None keeps the run's own data. Default None.
        overrides: ``key=value`` strings applied last. Default ().
    """
    d = config_to_dict(cfg)
    if data is not None:
        if not Path(data).exists():
            raise DataError(f"data folder {str(data)!r} does not exist")
        d["data"].update(root=str(data), val_dir=None)
        if d["data"]["kind"] == "samples":
            d["data"].update(kind="image", channels=3)
    return validate_config(apply_overrides(d, parse_overrides(list(overrides))))


def piece_length(cfg: Config, ds, model) -> int | None:
    """Length along the first spatial axis of the pieces a whole 1D file or video is processed in:
    the training window (``segment_length`` / ``sequence_length``) rounded up to the model's
    downsampling; None (whole items in one pass) for images and volumes."""
    window = {"audio": cfg.data.segment_length, "series": cfg.data.segment_length,
              "video": cfg.data.sequence_length}.get(ds.modality)
    if not window:
        return None
    d = int(model.downsample[0])
    return int(math.ceil(int(window) / d) * d)


def _pieces(x: torch.Tensor, chunk: int | None) -> list[torch.Tensor]:
    """``x [B, C, L, ...]`` split along ``L`` into non-overlapping pieces of ``chunk`` (the last may be shorter)."""
    if chunk is None or x.shape[2] <= chunk:
        return [x]
    return list(torch.split(x, chunk, dim=2))


def _grid_axis(model) -> int:
    """The first latent axis of a code grid: ``[B, *L(, G)]`` codes or a ``[B, E, *L]`` posterior mean."""
    return 1 if model.codebook_sizes else 2


@torch.no_grad()
def encode_whole(model, x: torch.Tensor, chunk: int | None = None) -> list[torch.Tensor]:
    """Code grids of a whole item ``x [1, C, *S]`` (``*S`` a multiple of the downsampling): its
    non-overlapping ``chunk`` pieces along the first axis encoded one by one and concatenated, so a
    long recording or video gives one grid per level."""
    per_piece = [encode_grids(model, piece) for piece in _pieces(x, chunk)]
    return [torch.cat([p[j] for p in per_piece], dim=_grid_axis(model)) for j in range(len(per_piece[0]))]


@torch.no_grad()
def decode_whole(model, grids: list[torch.Tensor], spatial: tuple[int, ...], chunk: int | None = None) -> torch.Tensor:
    """Inverse of :func:`encode_whole`: grids of an item of padded ``spatial`` shape -> ``[1, C, *S]``."""
    if chunk is None or spatial[0] <= chunk:
        return decode_grids(model, grids)
    lens = [s[0] for s in model.code_shapes((chunk, *spatial[1:]))]  # latent chunk length per grid
    axis = _grid_axis(model)
    split = [torch.split(g, n, dim=axis) for g, n in zip(grids, lens)]
    return torch.cat([decode_grids(model, [s[k] for s in split]) for k in range(len(split[0]))], dim=2)


@torch.no_grad()
def _forward_whole(model, x: torch.Tensor, chunk: int | None) -> tuple[list[torch.Tensor], torch.Tensor, dict]:
    """One forward pass per ``chunk`` piece of a whole item ``x [1, C, *S]``: its code grids and
    reconstruction concatenated as :func:`encode_whole` / :func:`decode_whole` give them (in eval mode the
    forward reconstruction is ``decode(encode(x))``), and the model's own scalars (``kl_loss``,
    ``commitment_loss``, ...) averaged over the pieces by length."""
    per_piece, recons, scalars = [], [], {}
    for piece in _pieces(x, chunk):
        out = model(piece)
        per_piece.append(grids_of(model, out.indices if model.codebook_sizes else out))
        recons.append(out.reconstruction)
        for k, v in out.scalars().items():
            if k not in ("perplexity", "usage"):
                scalars[k] = scalars.get(k, 0.0) + v.float().reshape(-1)[:1] * piece.shape[2] / x.shape[2]
    grids = [torch.cat([p[j] for p in per_piece], dim=_grid_axis(model)) for j in range(len(per_piece[0]))]
    return grids, torch.cat(recons, dim=2), scalars


def _whole_items(ds) -> Iterator[tuple[int, dict]]:
    """``(i, item)`` for every loadable item (``item["valid"]`` filled in when the dataset gives none);
    a file that fails is skipped with a warning (``FileDataset.try_item``)."""
    for i in range(len(ds)):
        item = ds.try_item(i) if hasattr(ds, "try_item") else ds[i]
        if item is not None:
            item.setdefault("valid", torch.tensor(item["data"].shape[1:], dtype=torch.long))
            yield i, item


def code_stats(model, grids, x_shape, valid: torch.Tensor) -> tuple[torch.Tensor, int, float]:
    """``([G, K] float32 counts, code indices, fixed-length bits)`` of a batch's code grids, counting only
    code positions not wholly inside padding (every index costs log2 of its own codebook's size).

    Args:
        model: the model (``codebook_sizes``, ``n_dims``).
        grids: integer codes ``[B, *L(, G)]`` per grid (a tensor: one grid; hierarchical: top, bottom),
            e.g. ``encode_grids(model, x)`` or a forward output's ``indices``.
        x_shape: the input batch's shape ``[B, C, *S]``.
        valid: ``[B, n_dims]`` real extent per item (``batch["valid"]``).
    """
    from ndvq.data.common import code_mask

    grids = [grids] if torch.is_tensor(grids) else list(grids)
    sizes, k = iter(model.codebook_sizes), max(model.codebook_sizes)
    rows, n_codes, bits = [], 0, 0.0
    for g in grids:
        lat = g.shape[1:1 + model.n_dims]
        down = [int(s) // int(n) for s, n in zip(x_shape[2:], lat)]
        mask = code_mask(valid, down, lat).to(g.device)  # [B, *L]
        rows.append(M.code_histogram(g, k, mask).float())
        columns, kept = (g.shape[-1] if g.ndim == model.n_dims + 2 else 1), int(mask.sum())
        n_codes += kept * columns
        bits += kept * sum(math.log2(max(next(sizes), 2)) for _ in range(columns))
    if len(set(model.codebook_sizes)) > 1 and len(rows) > 1:
        return rows[-1], n_codes, bits  # levels of different sizes: the bottom grid's (as the training loop)
    return torch.cat(rows), n_codes, bits


def _item_metrics(x, y, mask, rng) -> dict[str, torch.Tensor]:
    out = {"mse": M.mse(x, y, mask), "mae": M.mae(x, y, mask), "psnr": M.psnr(x, y, rng, mask),
           "ssim": M.ssim(x, y, rng, mask)}
    if x.ndim >= 4:  # 2D and 3D
        out["ms_ssim"] = M.ms_ssim(*_real_part(x, y, mask), rng)
    return {k: v for k, v in out.items() if v is not None}


def _real_part(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``x, y [1, C, *S]`` cropped to the real extent of ``mask`` (padding lies at the end of every axis)."""
    if mask is None:
        return x, y
    m = mask.flatten(0, 1).any(0) if mask.shape[1] > 1 else mask[0, 0]  # [1, 1|C, *S] -> [*S]
    extent = [int(m.movedim(a, 0).reshape(m.shape[a], -1).any(1).sum()) for a in range(m.ndim)]
    crop = (slice(None), slice(None), *(slice(0, e) for e in extent))
    return x[crop], y[crop]


@torch.no_grad()
def evaluate(path: str | Path, data: str | Path | None = None, split: str | None = None, batch_size: int = 8,
             out: str | Path | None = None, overrides: list[str] = ()) -> dict[str, float]:
    """Metrics of a trained model over the whole files of a split, written as JSON.

    Each file is one item at its own size (audio / series / video in training-window pieces,
    concatenated); one forward pass per piece gives the codes, the model's scalars and the reconstruction
    (in eval mode ``decode(encode(x))``, what ``ndvq decode`` writes)
    (clipped to ``[-1, 1]`` except series), and every metric counts only the real samples / pixels /
    voxels (padding to the downsampling excluded), so the PSNR equals the PSNR between decoded files
    and the originals in the dataset's normalised units.

    Args:
        path: run directory or checkpoint.
        data: a data folder (default None: the run's own data config).
        split: ``"train" | "val" | "all"``; default ``"all"`` with ``data``, else ``"val"``.
        batch_size: kept for compatibility (whole files are processed one at a time). Default 8.
        out: JSON file. Default ``<run>/eval_<split>.json``.
        overrides: ``data.*=value`` overrides.

    Returns:
        ``{"n_items", "split", "mse", "mae", "psnr", "ssim", "usage", "perplexity", "bits_per_element",
        "entropy_bits_per_element", "skipped_files", ...}`` (SSIM for 2D/3D; code metrics for VQ;
        the model's own scalars such as ``kl_loss``).
    """
    run = load_run_model(path)
    model, cfg = run.model, data_config(run.config, data, overrides)
    split = split or ("all" if data is not None else "val")
    ds = build.build_dataset(cfg, split, stats_dir=run.run_dir, pad_multiple=model.downsample)
    build.check_data_fits_model(cfg, ds, model, trained=True)
    rng, chunk, clip = getattr(ds, "data_range", None), piece_length(cfg, ds, model), ds.modality != "series"
    sums: dict[str, float] = {}
    counts, n, n_elements, n_codes, bits = None, 0, 0, 0, 0.0
    for _, item in _whole_items(ds):
        x = item["data"][None].to(_device())
        mask = valid_mask({"data": x, "valid": item["valid"][None],
                           **({"observed": item["observed"][None]} if "observed" in item else {})}).to(x.device)
        grids, y, per_item = _forward_whole(model, x, chunk)
        y = y.float().clamp(-1, 1) if clip else y.float()
        per_item.update(_item_metrics(x, y, mask, rng))
        for k, v in per_item.items():
            sums[k] = sums.get(k, 0.0) + float(v.sum())
        real = int(mask.expand_as(x).sum())
        n_elements += real
        if model.codebook_sizes:
            c, kept, b = code_stats(model, grids, x.shape, item["valid"][None])
            counts, n_codes, bits = (c.double() if counts is None else counts + c), n_codes + kept, bits + b
        n += 1
    skipped = [s[0] for s in getattr(ds, "skipped", [])]
    if n == 0:
        raise DataError(f"no item of the {split!r} split could be loaded; skipped: {skipped[:3]}")
    res = {"n_items": n, "split": split, **{k: v / n for k, v in sums.items()}, "skipped_files": len(skipped)}
    if counts is not None:
        ppl, usage = usage_from_counts(counts)
        res.update(usage=float(usage), perplexity=float(ppl), bits_per_element=bits / n_elements,
                   entropy_bits_per_element=M.entropy_bits(counts) * n_codes / n_elements)
    out = Path(out) if out is not None else run.run_dir / f"eval_{split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    res["json"] = str(out)
    return res


def format_table(res: dict) -> str:
    """Two-column text table of :func:`evaluate`'s result."""
    rows = [(k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in res.items() if k != "json"]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows) + f"\n(written to {res.get('json')})"


def _json_info(info) -> str:
    def default(o):
        return o.tolist() if hasattr(o, "tolist") else str(o)

    return json.dumps(info or {}, default=default)


@torch.no_grad()
def encode(path: str | Path, out: str | Path, data: str | Path | None = None, split: str = "all",
           batch_size: int = 8, overrides: list[str] = ()) -> Path:
    """Write the codes of every whole file to ``out`` (``.npz``); files that fail to load are skipped
    with a warning.

    A long recording, series or video is encoded in non-overlapping pieces of the training window
    (rounded up to the downsampling) whose code grids are concatenated along time: one grid per file.
    Keys: ``codes`` (one level) or ``codes_0``, ``codes_1`` (hierarchical: top, bottom), stacked
    ``[N, *latent(, G)]`` when all items share a shape, else one array per item
    (``codes_item000012``...); KL-VAE models store the posterior mean as ``latents``. Plus
    ``names``, ``input_shapes [N, 1 + n_dims]`` (channels + the real extent), ``padded_shapes``,
    ``latent_shapes [N, n_dims]``, ``chunk`` (piece length, 0 = whole), ``infos`` (JSON per item:
    ``item_info``, what decode needs to undo the data layer), ``modality``, ``model_class``.
    """
    run = load_run_model(path)
    model, cfg = run.model, data_config(run.config, data, overrides)
    ds = build.build_dataset(cfg, split, stats_dir=run.run_dir, pad_multiple=model.downsample)
    build.check_data_fits_model(cfg, ds, model, trained=True)
    per_grid: list[list[np.ndarray]] = []
    names, in_shapes, padded, lat_shapes, infos = [], [], [], [], []
    chunk = piece_length(cfg, ds, model)
    for i, item in _whole_items(ds):
        x = item["data"][None].to(_device())
        grids = encode_whole(model, x, chunk)
        per_grid = per_grid or [[] for _ in grids]
        for j, g in enumerate(grids):
            per_grid[j].append(g[0].cpu().numpy())
        info = ds.item_info(i) if hasattr(ds, "item_info") else {}
        names.append(str(info.get("path", i)))
        infos.append(_json_info(info))
        in_shapes.append([x.shape[1], *item["valid"].tolist()])
        padded.append(list(x.shape[2:]))
        lat_shapes.append(list(model.latent_shape(tuple(x.shape[2:]))))
    if not names:
        raise DataError(f"no item of the {split!r} split could be loaded; skipped: "
                        f"{[s[0] for s in getattr(ds, 'skipped', [])[:3]]}")
    key = "codes" if model.codebook_sizes else "latents"
    arrays: dict[str, np.ndarray] = {}
    for j, items in enumerate(per_grid):
        name = key if len(per_grid) == 1 else f"{key}_{j}"
        if len({a.shape for a in items}) == 1:
            arrays[name] = np.stack(items)
        else:
            arrays.update({f"{name}_item{i:06d}": a for i, a in enumerate(items)})
    if not model.codebook_sizes:  # suggested latent-diffusion scale factor: 1 / std of all latent means
        from ndvq.models import latent_scale_factor

        means = torch.cat([torch.from_numpy(a).flatten() for a in per_grid[0]])
        arrays["scale_factor"] = np.array(latent_scale_factor(means), dtype=np.float64)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays, names=np.array(names), infos=np.array(infos),
                        input_shapes=np.array(in_shapes), latent_shapes=np.array(lat_shapes),
                        padded_shapes=np.array(padded), chunk=np.array(chunk or 0),
                        data_range=np.array(float(getattr(ds, "data_range", None) or "nan")),
                        modality=np.array(ds.modality), model_class=np.array(type(model).__name__),
                        n_levels=np.array(len(per_grid)), fingerprint=np.array(codes_fingerprint(model)))
    return out


@torch.no_grad()
def decode(path: str | Path, codes: str | Path, out: str | Path) -> list[Path]:
    """Turn an ``ndvq encode`` file back into files in the modality's own format under ``out``."""
    from ndvq.data import write_item

    model = load_run_model(path).model
    check_codes_file(codes, model)
    if not Path(codes).is_file():
        raise CodesError(f"codes file {str(codes)!r} does not exist")
    try:
        z = np.load(codes, allow_pickle=False)
        n_levels, names, modality = int(z["n_levels"]), list(z["names"]), str(z["modality"])
        if str(z["model_class"]) != type(model).__name__:
            raise CodesError(f"{codes} was encoded by a {z['model_class']}, the checkpoint holds a {type(model).__name__}")
    except (KeyError, OSError) as e:
        raise CodesError(f"{str(codes)!r} is not an ndvq codes file: {e}") from None
    key = "codes" if model.codebook_sizes else "latents"
    level_keys = [key] if n_levels == 1 else [f"{key}_{j}" for j in range(n_levels)]
    out_dir = Path(out)
    chunk = int(z["chunk"]) if "chunk" in z else 0
    written: list[Path] = []
    used: set[str] = set()
    for i, name in enumerate(names):
        levels = [torch.from_numpy(z[k][i] if k in z else z[f"{k}_item{i:06d}"])[None].to(_device()) for k in level_keys]
        shape = [int(s) for s in z["input_shapes"][i]]
        if "padded_shapes" in z:
            recon = decode_whole(model, levels, tuple(int(s) for s in z["padded_shapes"][i]), chunk or None)
        else:  # a codes file written before whole-file encoding
            recon = decode_grids(model, levels)
        recon = recon[0].float().cpu()[(slice(None),) + tuple(slice(0, s) for s in shape[1:])]  # real extent
        info = json.loads(str(z["infos"][i]))
        if "affine" in info:
            info["affine"] = np.asarray(info["affine"])
        stem = out_stem(name, i, used)
        written += write_item(modality, recon if modality == "series" else recon.clamp(-1, 1), out_dir / stem, info=info)
    return written


_KNOWN_SUFFIXES = (".nii.gz", ".nii")


def out_stem(name: str, i: int, used: set[str]) -> str:
    """The decoded file's name: the source file's name without its extension (``scan.nii.gz`` ->
    ``scan``), with ``_<i>`` added when two sources share a name."""
    base = Path(name).name
    low = base.lower()
    stem = next((base[: -len(x)] for x in _KNOWN_SUFFIXES if low.endswith(x)), Path(base).stem) or f"{i:06d}"
    if stem in used:
        stem = f"{stem}_{i:06d}"
    used.add(stem)
    return stem
