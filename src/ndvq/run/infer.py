"""Using a trained model: ``ndvq eval``, ``ndvq encode`` and ``ndvq decode``.

A model is rebuilt from its checkpoint alone (``model_class`` + ``model_args``), loaded with
``torch.load(weights_only=True)``. Items of different sizes (whole images or volumes) are batched
when consecutive items share a shape.

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
from ndvq.errors import CheckpointError, CodesError, ConfigError, DataError
from ndvq.quantizers.base import usage_from_counts
from ndvq.run.checkpoint import LoadedModel
from ndvq.run.checkpoint import load_model as _load
from ndvq.run.codes import code_counts, decode_grids, encode_grids
from ndvq.run.codesfile import check_codes_file, codes_fingerprint

__all__ = ["load_run_model", "evaluate", "encode", "decode", "format_table"]


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_run_model(path: str | Path) -> LoadedModel:
    """The trained model of a run (on the default device, eval mode) with its config and run directory."""
    loaded = _load(path, map_location=_device())
    if loaded.config is None:
        raise CheckpointError(f"{str(path)!r} is a pretrained folder without a run config; pass a run directory "
                              "or a .ckpt file written by ndvq train")
    return loaded


def _data_cfg(cfg: Config, data: str | Path | None, overrides: list[str]) -> Config:
    """The run's config with ``data.root`` (and any ``data.*=...`` overrides) replaced."""
    d = config_to_dict(cfg)
    if data is not None:
        if not Path(data).exists():
            raise DataError(f"data folder {str(data)!r} does not exist")
        d["data"].update(root=str(data), val_dir=None)
        if d["data"]["kind"] == "samples":
            raise ConfigError("this model was trained on the built-in samples; pass data.kind=<image|video|audio|"
                             "series|volume> together with --data")
    return validate_config(apply_overrides(d, parse_overrides(overrides)))


def _batches(ds, batch_size: int) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Consecutive items of equal shape, up to ``batch_size`` at a time."""
    idx, items = [], []
    for i in range(len(ds)):
        x = ds[i]["data"]
        if items and (x.shape != items[0].shape or len(items) == batch_size):
            yield idx, torch.stack(items)
            idx, items = [], []
        idx.append(i)
        items.append(x)
    if items:
        yield idx, torch.stack(items)


@torch.no_grad()
def evaluate(path: str | Path, data: str | Path | None = None, split: str | None = None, batch_size: int = 8,
             out: str | Path | None = None, overrides: list[str] = ()) -> dict[str, float]:
    """Metrics of a trained model over a whole split, written as JSON.

    Args:
        path: run directory or checkpoint.
        data: a data folder (default None: the run's own data config).
        split: ``"train" | "val" | "all"``; default ``"all"`` with ``data``, else ``"val"``.
        batch_size: items per forward pass. Default 8.
        out: JSON file. Default ``<run>/eval_<split>.json``.
        overrides: ``data.*=value`` overrides.

    Returns:
        ``{"n_items", "mse", "mae", "psnr", "ssim", "recon_loss", "usage", "perplexity",
        "bits_per_element", "entropy_bits_per_element", ...}`` (SSIM for 2D/3D; code metrics for VQ).
    """
    run = load_run_model(path)
    model, cfg = run.model, _data_cfg(run.config, data, list(overrides))
    split = split or ("all" if data is not None else "val")
    ds = build.build_dataset(cfg, split, stats_dir=run.run_dir, pad_multiple=model.downsample)
    build.check_data_fits_model(cfg, ds, model)
    rng = getattr(ds, "data_range", None)
    sums: dict[str, float] = {}
    counts, n, n_elements, n_codes, bits = None, 0, 0, 0, 0.0
    for idx, x in _batches(ds, batch_size):
        x = x.to(_device())
        o = model(x)
        per_item: dict[str, torch.Tensor] = {}
        for i, xi, yi in zip(idx, x, o.reconstruction.float()):  # metrics on the unpadded item
            xi, yi = _unpad(ds, i, xi)[None], _unpad(ds, i, yi)[None]
            for k, v in {"mse": M.mse(xi, yi), "mae": M.mae(xi, yi), "psnr": M.psnr(xi, yi, rng),
                         "ssim": M.ssim(xi, yi, rng)}.items():
                if v is not None:
                    per_item[k] = torch.cat([per_item[k], v]) if k in per_item else v
            n_elements += xi.numel()
        for k, v in o.scalars().items():
            if k not in ("perplexity", "usage"):
                per_item[k] = v.float().expand(len(x))
        for k, v in per_item.items():
            sums[k] = sums.get(k, 0.0) + float(v.sum())
        c = code_counts(o)
        if c is not None:
            counts = c.double() if counts is None else counts + c.double()
            grids = encode_grids(model, x)
            n_codes += sum(g.numel() for g in grids)
            bits += _fixed_length_bits(model, grids)
        n += len(x)
    res = {"n_items": n, "split": split, **{k: v / n for k, v in sums.items()}}
    if counts is not None:
        ppl, usage = usage_from_counts(counts)
        res.update(usage=float(usage), perplexity=float(ppl),
                   bits_per_element=bits / n_elements,
                   entropy_bits_per_element=M.entropy_bits(counts) * n_codes / n_elements)
    out = Path(out) if out is not None else run.run_dir / f"eval_{split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    res["json"] = str(out)
    return res


def _fixed_length_bits(model: torch.nn.Module, grids: list[torch.Tensor]) -> float:
    """Bits of a fixed-length code of ``grids``: every index costs log2 of its own codebook's size.

    Index columns follow ``model.codebook_sizes`` (grids in order, then the codebooks within a grid).
    """
    sizes = iter(model.codebook_sizes)
    bits = 0.0
    for g in grids:
        columns = g.shape[-1] if g.ndim == model.n_dims + 2 else 1  # [B, *L, G] or [B, *L]
        positions = g.numel() // columns
        bits += positions * sum(math.log2(max(next(sizes), 2)) for _ in range(columns))
    return bits


def _item_shape(ds, i: int) -> list[int] | None:
    info = ds.item_info(i) if hasattr(ds, "item_info") else None
    return list((info or {}).get("item_shape") or []) or None


def _unpad(ds, i: int, x: torch.Tensor) -> torch.Tensor:
    """``x [C, *S]`` cropped to item ``i``'s shape before padding (``item_info(i)["item_shape"]``)."""
    shape = _item_shape(ds, i)
    if shape is None or len(shape) != x.ndim - 1:
        return x
    return x[(slice(None),) + tuple(slice(0, s) for s in shape)]


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
    """Write the codes of every item to ``out`` (``.npz``).

    Keys: ``codes`` (one level) or ``codes_0``, ``codes_1`` (hierarchical: top, bottom), stacked
    ``[N, *latent(, G)]`` when all items share a shape, else one array per item
    (``codes_item000012``...); KL-VAE models store the posterior mean as ``latents``. Plus
    ``names``, ``input_shapes [N, 1 + n_dims]``, ``latent_shapes [N, n_dims]``, ``infos`` (JSON per
    item), ``modality``, ``model_class``.
    """
    run = load_run_model(path)
    model, cfg = run.model, _data_cfg(run.config, data, list(overrides))
    ds = build.build_dataset(cfg, split, stats_dir=run.run_dir, pad_multiple=model.downsample)
    build.check_data_fits_model(cfg, ds, model)
    per_grid: list[list[np.ndarray]] = []
    names, in_shapes, lat_shapes, infos = [], [], [], []
    for idx, x in _batches(ds, batch_size):
        grids = encode_grids(model, x.to(_device()))
        per_grid = per_grid or [[] for _ in grids]
        for j, g in enumerate(grids):
            per_grid[j] += list(g.cpu().numpy())
        for i in idx:
            info = ds.item_info(i) if hasattr(ds, "item_info") else {}
            names.append(str((info or {}).get("path", i)))
            infos.append(_json_info(info))
        in_shapes += [[x.shape[1], *(_item_shape(ds, i) or x.shape[2:])] for i in idx]
        lat_shapes += [list(model.latent_shape(tuple(x.shape[2:])))] * len(idx)
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
    written: list[Path] = []
    for i, name in enumerate(names):
        levels = [torch.from_numpy(z[k][i] if k in z else z[f"{k}_item{i:06d}"])[None].to(_device()) for k in level_keys]
        recon = decode_grids(model, levels)[0].float().cpu()
        shape = [int(s) for s in z["input_shapes"][i]]
        recon = recon[(slice(None),) + tuple(slice(0, s) for s in shape[1:])]  # undo the padding to the downsampling
        info = json.loads(str(z["infos"][i]))
        if "affine" in info:
            info["affine"] = np.asarray(info["affine"])
        stem = f"{i:06d}_{Path(name).stem}" if not name.isdigit() else f"{i:06d}"
        written += write_item(modality, recon if modality == "series" else recon.clamp(-1, 1), out_dir / stem, info=info)
    return written
