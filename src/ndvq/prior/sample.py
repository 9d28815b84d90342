"""``ndvq sample RUN``: new items from the run's prior, decoded and written in the modality's own format.

One sample has the training item's shape (the prior's ``item_spatial``); its code grids are cut into the
prior's tiles (one tile when ``block`` is the training item's latent shape, the default) and each tile is
sampled token by token in the order of :mod:`ndvq.prior.layout` (key/value cache; ``cache=False``
recomputes the whole prefix at every token, for the speed comparison). The same ``seed`` gives the same
samples: sampling runs single-threaded from one ``torch.Generator``.

``prompt`` (video, audio, series): the file is encoded like ``ndvq encode`` does, its codes are cropped to
the training item's latent shape, and the tokens of the **first half of the time axis (the first latent
axis) of the first tile** - in every grid and every column - are kept; every other token is sampled. A
token is conditioned only on the tokens before it in the order, so the kept tokens of later columns or
grids are forced, not seen by the tokens sampled before them.

Example:
    >>> result = sample("runs/my-run", n=16, out="samples/", seed=0)        # doctest: +SKIP
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ndvq import build
from ndvq.errors import CheckpointError, ConfigError, DataError
from ndvq.prior.layout import Tile, TokenLayout, layout_for
from ndvq.prior.model import CodePrior, TileMeta
from ndvq.prior.store import load_prior
from ndvq.prior.tokens import single_thread
from ndvq.prior.train import load_codes_model
from ndvq.run.codes import decode_grids

__all__ = ["sample", "sample_tile", "SampleResult", "prompt_tokens"]

_DROP_INFO = ("path", "frames", "item_shape", "split", "patch", "missing")  # one file's, not the data's


@dataclass
class SampleResult:
    """What :func:`sample` returns: the written files, the sampled grids (``[n, *L(, G)]`` each) and, with a
    prompt, the kept tokens' mask per tile (``[T]`` bool) and the prompt's grids."""

    files: list[Path]
    grids: list[torch.Tensor]
    prompt_mask: list[torch.Tensor] | None = None
    prompt_grids: list[torch.Tensor] | None = None


def _pick(logits: torch.Tensor, temperature: float, top_k: int | None, gen: torch.Generator) -> torch.Tensor:
    """One token per row of ``logits [B, K]`` (already cut to the token's vocabulary)."""
    logits = logits.double() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=gen)[:, 0]


@torch.no_grad()
def sample_tile(prior: CodePrior, tile: Tile, n: int, gen: torch.Generator, *, temperature: float = 1.0,
                top_k: int | None = None, forced: tuple[torch.Tensor, torch.Tensor] | None = None,
                cache: bool = True) -> torch.Tensor:
    """``[n, T]`` tokens of one tile sampled in order.

    Args:
        prior: the prior (eval mode, CPU).
        tile: the tile (its columns, grids, vocabularies and coordinates).
        n: sequences sampled together.
        gen: the random generator.
        temperature: logits are divided by it. Default 1.0.
        top_k: sample among the ``k`` most likely tokens only. Default None (all).
        forced: ``(mask [T] bool, tokens [T])``: tokens kept instead of sampled. Default None.
        cache: decode with the key/value cache (one token per step); False recomputes the prefix. Default True.
    """
    meta = TileMeta.of(tile)
    prior.check_tile(meta)
    tokens = torch.zeros(n, tile.length, dtype=torch.long)
    kv = prior.new_cache(n, tile.length) if cache else None
    prev = None
    for i in range(tile.length):
        logits = prior.step(prev, meta, kv) if cache else prior(tokens[:, :i + 1], meta)[:, i]
        tok = _pick(logits[:, :int(tile.vocab[i])], temperature, top_k, gen)
        if forced is not None and bool(forced[0][i]):
            tok = forced[1][i].expand(n)
        tokens[:, i] = prev = tok
    return tokens


def _item_info(ds) -> dict:
    """What the writers need of the training data (rate, fps, units...), without one file's name and size."""
    info = dict(ds.item_info(0)) if hasattr(ds, "item_info") else {}
    return {k: v for k, v in info.items() if k not in _DROP_INFO}


def prompt_tokens(loaded, layout: TokenLayout, file: str | Path) -> tuple[list[torch.Tensor], list, list[torch.Tensor]]:
    """The prompt of ``file``: per tile ``(mask [T], tokens [T])`` (None for tiles without kept tokens), the
    mask list, and the file's grids cropped to the item's latent shape (``[*L(, G)]`` each)."""
    from ndvq.run.infer import data_config, encode_whole, piece_length

    file, model, cfg = Path(file), loaded.model, loaded.config
    kind = "image" if cfg.data.kind == "samples" else cfg.data.kind
    if kind not in ("video", "audio", "series"):
        raise ConfigError(f"--prompt continues a video, audio or series; this run's data is {kind}")
    if not file.is_file():
        raise DataError(f"prompt file {str(file)!r} does not exist")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / file.name).symlink_to(file.resolve())
        data_cfg = data_config(cfg, tmp)
        ds = build.build_dataset(data_cfg, "all", stats_dir=loaded.run_dir, pad_multiple=model.downsample)
        item = ds.try_item(0) if hasattr(ds, "try_item") else ds[0]
        if item is None:
            raise DataError(f"prompt file {str(file)!r} cannot be read as {ds.modality}")
        grids = encode_whole(model, item["data"][None], piece_length(data_cfg, ds, model))
    cropped = []
    for g, shape in zip(grids, layout.grid_shapes):
        if any(a < b for a, b in zip(g.shape[1:], shape)):
            raise DataError(f"prompt file {str(file)!r} is shorter than a training item ({list(g.shape[1:])} < "
                            f"{list(shape)} codes)")
        cropped.append(g[0][tuple(slice(0, s) for s in shape)].cpu())
    masks = [torch.zeros(t.length, dtype=torch.bool) for t in layout.tiles]
    first = layout.tiles[0]
    half = torch.tensor([math.ceil((sl[0].stop - sl[0].start) / 2) for sl in first.slices])  # per grid
    masks[0] = torch.as_tensor(first.coords[:, 0]) < half[torch.as_tensor(first.grid)]
    tokens = layout.flatten(cropped)
    return [(m, t) if m.any() else None for m, t in zip(masks, tokens)], masks, cropped


def sample(run_dir: str | Path, n: int, out: str | Path, *, temperature: float = 1.0, top_k: int | None = None,
           seed: int = 0, prompt: str | Path | None = None, cache: bool = True) -> SampleResult:
    """Sample ``n`` items from the run's prior, decode them and write ``out/sample_NNN.<ext>``.

    Args:
        run_dir: a run directory with a trained prior (``ndvq prior RUN``).
        n: items to sample.
        out: output folder.
        temperature: > 0. Default 1.0.
        top_k: keep the ``k`` most likely tokens (>= 1). Default None (all).
        seed: the generator's seed. Default 0.
        prompt: a video/audio/series file whose beginning is kept (see the module docstring). Default None.
        cache: sample with the key/value cache. Default True.

    Raises:
        CheckpointError: no run, no codes (KL-VAE) or no trained prior. ConfigError: bad arguments.
    """
    if not temperature > 0 or n < 1 or (top_k is not None and top_k < 1):
        raise ConfigError(f"need n >= 1, temperature > 0 and top_k >= 1; got n={n}, temperature={temperature}, "
                          f"top_k={top_k}")
    loaded = load_codes_model(run_dir)
    found = load_prior(loaded.run_dir)
    if found is None:
        raise CheckpointError(f"{str(run_dir)!r} has no trained prior; train one with: ndvq prior {run_dir}")
    prior, facts = found
    model = loaded.model.cpu()
    layout = layout_for(model, tuple(facts["item_spatial"]), tuple(facts["block"]))
    forced, masks, prompt_grids = (prompt_tokens(loaded, layout, prompt) if prompt is not None
                                   else ([None] * len(layout.tiles), None, None))
    gen = torch.Generator().manual_seed(int(seed))
    with single_thread(), torch.no_grad():
        per_tile = [sample_tile(prior, t, n, gen, temperature=temperature, top_k=top_k, forced=f, cache=cache)
                    for t, f in zip(layout.tiles, forced)]
        items = [layout.unflatten([tokens[i] for tokens in per_tile]) for i in range(n)]
        grids = [torch.stack([it[g] for it in items]) for g in range(len(layout.grid_shapes))]  # [n, *L(, G)]
        x = decode_grids(model, grids).float()
    ds = build.build_dataset(loaded.config, "train", stats_dir=loaded.run_dir)
    from ndvq.data import write_item

    info, files = _item_info(ds), []
    for i in range(n):
        item = x[i] if ds.modality == "series" else x[i].clamp(-1, 1)
        files += write_item(ds.modality, item, Path(out) / f"sample_{i:03d}", info=info)
    return SampleResult(files, grids, masks, prompt_grids)
