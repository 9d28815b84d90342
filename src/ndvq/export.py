"""``ndvq export``: a trained encoder and decoder as ONNX or TorchScript graphs that run without ndvq.

    ndvq export RUN --format onnx|torchscript --part encoder|decoder|both --out DIR

The encoder graph maps ``x [B, C, *S]`` to what ``ndvq encode`` stores: integer codes ``[B, *L(, G)]``
(int64; a hierarchical model gives two outputs, ``codes_0`` top and ``codes_1`` bottom) or, for a
Gaussian bottleneck, the posterior mean ``latents [B, E, *L]``. The decoder graph maps those back to
``[B, C_out, *S]``. Batch and spatial sizes stay free (each ``S`` a multiple of the model's
``input_multiple``). ONNX uses the ``torch.export``-based exporter (``dynamo=True``; it needs
``onnxscript``: ``pip install "ndvq[onnx]"``); the older TorchScript-based ONNX exporter cannot
translate the codebook search. TorchScript files are traced (``torch.jit.trace``) and load with
``torch.jit.load`` alone. ``DIR/export.json`` lists the files, input/output names and the model facts.

Example:
    >>> import tempfile, torch
    >>> from ndvq.models import Autoencoder
    >>> m = Autoencoder(n_dims=1, in_channels=1, videogpt={"n_hiddens": 16, "num_res_blocks": 1}, n_codes=16)
    >>> paths = export_model(m, tempfile.mkdtemp(), fmt="torchscript", part="encoder")
    >>> enc, x = torch.jit.load(paths[0]), torch.randn(2, 1, 32)
    >>> (codes,) = enc(x)                                   # one output per code grid
    >>> bool((codes == m.eval().encode(x)).all())
    True
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import logging
import warnings
from pathlib import Path

from ndvq.errors import ConfigError

# also EncoderGraph and DecoderGraph, built on first access (module __getattr__)
__all__ = ["FORMATS", "PARTS", "example_input", "export_model", "export_run", "register"]

FORMATS = ("onnx", "torchscript")
PARTS = ("encoder", "decoder", "both")
_SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}


@functools.cache
def _graph_classes() -> dict[str, type]:
    """The two graph modules, defined on first use: importing this module (``ndvq --help`` registers
    ``export``) must not import torch."""
    from torch import nn

    from ndvq.run.codes import decode_grids, encode_grids

    class EncoderGraph(nn.Module):
        """``x [B, C, *S]`` -> one tensor per code grid: int64 codes, or the Gaussian posterior mean.

        Args:
            model: an autoencoder (``Autoencoder``, a preset, ``HierarchicalAutoencoder``), put in eval mode.
        """

        def __init__(self, model: nn.Module):
            super().__init__()
            self.model = model.eval()

        def forward(self, x):
            return tuple(encode_grids(self.model, x))

    class DecoderGraph(nn.Module):
        """The encoder's outputs (codes per grid, or the latent mean) -> reconstruction ``[B, C_out, *S]``.

        Args:
            model: the autoencoder, put in eval mode.
        """

        def __init__(self, model: nn.Module):
            super().__init__()
            self.model = model.eval()

        def forward(self, *grids):
            return decode_grids(self.model, list(grids))

    for cls in (EncoderGraph, DecoderGraph):
        cls.__qualname__ = cls.__name__
    return {"EncoderGraph": EncoderGraph, "DecoderGraph": DecoderGraph}


def __getattr__(name: str):
    """``EncoderGraph`` and ``DecoderGraph`` (see :func:`_graph_classes`)."""
    if name in ("EncoderGraph", "DecoderGraph"):
        return _graph_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def example_input(model, batch: int = 2):
    """A random input ``[batch, C, *S]`` with ``S[i] = (3 + i) * input_multiple[i]``: distinct sizes per
    axis and no size 1, so no axis is specialised to a constant or tied to another while exporting."""
    import torch

    spatial = [(3 + i) * m for i, m in enumerate(model.input_multiple)]
    return torch.randn(batch, model.in_channels, *spatial)


def _names(model, n_grids: int) -> list[str]:
    key = "codes" if model.codebook_sizes else "latents"
    return [key] if n_grids == 1 else [f"{key}_{j}" for j in range(n_grids)]


def _dynamic(n_dims: int, first_spatial: int) -> dict[int, object]:
    """Batch and the ``n_dims`` spatial axes from ``first_spatial`` on are free (``Dim.AUTO``)."""
    import torch

    auto = torch.export.Dim.AUTO
    return {0: auto, **{first_spatial + i: auto for i in range(n_dims)}}


def _onnx(graph, args: tuple, path: Path, names: tuple[list, list], dynamic: tuple) -> None:
    import torch

    try:
        import onnxscript  # noqa: F401  (the torch.export-based exporter needs it)
    except ImportError:
        raise ConfigError('ONNX export needs the onnx and onnxscript packages; install them with: '
                          'pip install "ndvq[onnx]"') from None
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "onnx_ir", "onnxscript")]  # progress and notes
    levels = [q.level for q in quiet]
    try:
        for q in quiet:
            q.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(graph, args, dynamo=True, input_names=names[0], output_names=names[1],
                                        dynamic_shapes=dynamic)
            program.save(str(path))
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)


def _torchscript(graph, args: tuple, path: Path) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation notes
        traced = torch.jit.trace(graph, args, check_trace=False)
    traced.save(str(path))


def _export_one(graph, args: tuple, path: Path, fmt: str, names: tuple[list, list],
                dynamic: tuple) -> None:
    if fmt == "onnx":
        _onnx(graph, args, path, names, dynamic)
    else:
        _torchscript(graph, args, path)


def export_model(model, out_dir: str | Path, fmt: str = "onnx", part: str = "both",
                 batch: int = 2) -> list[Path]:
    """Export ``model``'s encoder and/or decoder to ``out_dir`` and write ``export.json``.

    Args:
        model: a trained autoencoder (any backbone x bottleneck, a preset or a hierarchical model).
        out_dir: output folder (created): ``encoder.onnx``/``decoder.onnx`` or ``encoder.pt``/``decoder.pt``.
        fmt: ``"onnx"`` or ``"torchscript"``. Default ``"onnx"``.
        part: ``"encoder"``, ``"decoder"`` or ``"both"``. Default ``"both"``.
        batch: batch size of the example input used for tracing (the graphs accept any). Default 2.

    Returns:
        The written graph files (encoder first).
    """
    if fmt not in FORMATS or part not in PARTS:
        raise ConfigError(f"--format must be one of {FORMATS} and --part one of {PARTS}, got {fmt!r}, {part!r}")
    model = model.eval().cpu()
    validate, model.validate_inputs = getattr(model, "validate_inputs", False), False  # no host-side checks
    import torch

    try:
        with _one_search_chunk(model), torch.no_grad():
            return _export(model, Path(out_dir), fmt, part, batch)
    finally:
        model.validate_inputs = validate


@contextlib.contextmanager
def _one_search_chunk(model):
    """Codebook searches in one chunk while exporting: the chunk count would otherwise be traced as a
    constant, and a graph traced on a small input would fail on one with more tokens than a chunk."""
    saved = [(m, m.chunk_rows) for m in model.modules() if hasattr(m, "chunk_rows")]
    for m, _ in saved:
        m.chunk_rows = 2**31 - 1
    try:
        yield
    finally:
        for m, rows in saved:
            m.chunk_rows = rows


def _export(model, out: Path, fmt: str, part: str, batch: int) -> list[Path]:
    """The work of :func:`export_model` on a prepared (eval, CPU, one-chunk) model."""
    from ndvq.run.codes import encode_grids

    graphs = _graph_classes()
    x = example_input(model, batch)
    grids = tuple(encode_grids(model, x))
    names = _names(model, len(grids))
    grid_axis = 2 if not model.codebook_sizes else 1  # latents [B, E, *L]; codes [B, *L(, G)]
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    if part in ("encoder", "both"):
        paths.append(out / f"encoder{_SUFFIX[fmt]}")
        _export_one(graphs["EncoderGraph"](model), (x,), paths[-1], fmt, (["x"], names), (_dynamic(model.n_dims, 2),))
    if part in ("decoder", "both"):
        paths.append(out / f"decoder{_SUFFIX[fmt]}")
        dynamic = (tuple(_dynamic(model.n_dims, grid_axis) for _ in grids),)  # *grids arrive as one tuple
        _export_one(graphs["DecoderGraph"](model), grids, paths[-1], fmt, (names, ["reconstruction"]), dynamic)
    _write_manifest(model, out, fmt, paths, names, x, grids)
    return paths


def _write_manifest(model, out: Path, fmt: str, paths: list[Path], names: list[str], x, grids) -> None:
    """``export.json``: files, tensor names and layouts, and the facts a user of the graphs needs."""
    import torch

    n = model.n_dims
    spatial = ", ".join(f"S{i}" for i in range(n))
    latent = ", ".join(f"L{i}" for i in range(n))
    layouts = [f"[B, {model.embedding_dim}, {latent}] float32" if not model.codebook_sizes else
               f"[B, {latent}{', G' if g.ndim == n + 2 else ''}] int64" for g in grids]
    manifest = {
        "format": fmt, "files": [p.name for p in paths], "model_class": type(model).__name__,
        "model_args": getattr(model, "config", None),
        "input": {"name": "x", "layout": f"[B, {model.in_channels}, {spatial}] float32 (normalised as in training)",
                  "spatial_multiple": list(model.input_multiple)},
        "codes": dict(zip(names, layouts)),
        "output": {"name": "reconstruction", "layout": f"[B, {model.out_channels}, {spatial}] float32"},
        "codebook_sizes": list(model.codebook_sizes), "downsample": list(model.downsample),
        "example_input_shape": list(x.shape), "torch": torch.__version__,
    }
    (out / "export.json").write_text(json.dumps(manifest, indent=2))


def export_run(run: str | Path, out: str | Path, fmt: str = "onnx", part: str = "both") -> list[Path]:
    """Export the model of a run directory, checkpoint file or pretrained folder (see :func:`export_model`)."""
    from ndvq.run.checkpoint import load_model

    return export_model(load_model(run).model, out, fmt=fmt, part=part)


def register(subparsers) -> None:
    """Add ``ndvq export`` to an argparse subparsers object (``ndvq.cli`` calls this)."""
    p = subparsers.add_parser(
        "export", help="export the encoder/decoder as ONNX or TorchScript",
        description="Write the trained encoder (input -> integer codes, or the Gaussian mean) and decoder "
                    "(codes -> output) as graphs that run without ndvq: ONNX (onnxruntime, ...) or TorchScript "
                    "(torch.jit.load). Batch and spatial sizes stay free. See docs/export.md.",
        epilog="examples:\n  ndvq export runs/my-run --out exported/\n"
               "  ndvq export runs/my-run --format torchscript --part encoder --out exported/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, metavar="RUN_OR_CKPT", help="run directory, .ckpt file or pretrained folder")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="graph format (default onnx)")
    p.add_argument("--part", choices=PARTS, default="both", help="what to export (default both)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    paths = export_run(args.run, args.out, fmt=args.format, part=args.part)
    for path in paths:
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    print(f"wrote {Path(args.out) / 'export.json'}")
    return 0
