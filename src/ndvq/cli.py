"""The ``ndvq`` command line: parses arguments and dispatches; the work happens elsewhere.

    ndvq train [-c CONFIG] [--resume RUN | --overwrite] [--print-config] [key=value ...]
    ndvq eval RUN_OR_CKPT [--data DIR] [--split val] [--out metrics.json] [data.key=value ...]
    ndvq encode RUN_OR_CKPT [--data DIR] --out codes.npz [data.key=value ...]
    ndvq decode RUN_OR_CKPT CODES.npz --out DIR
    ndvq compress RUN_OR_CKPT FILES... --out DIR [--levels K] [--prior auto|prior|none] [data.key=value ...]
    ndvq decompress FILES.ndvq... --out DIR [--run RUN_OR_CKPT]
    ndvq prior RUN [-c prior.yaml] [--overwrite] [key=value ...]
    ndvq sample RUN --out DIR [--n 16] [--temperature T] [--top-k K] [--seed S] [--prompt FILE]
    ndvq doctor | report | tune ...   (added by ndvq.diagnostics.commands)

Exit codes: 0 done; 2 a user error (an :class:`ndvq.errors.NdvqError`: missing data, unreadable config,
unknown key, bad value, incompatible checkpoint, a run directory in use; or a user path that is missing or
unreadable), printed as one line ``ndvq: error: ...``; 1 a non-finite training loss or a dead DDP rank (one
line each) or a bug (the traceback, then a line saying so); 130 stopped by SIGINT (Ctrl-C), 143 stopped by
SIGTERM (a checkpoint is saved first). Set ``NDVQ_DEBUG=1`` to see every traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
import warnings
from pathlib import Path

from ndvq.convert import register as register_convert
from ndvq.diagnostics.commands import USER_ERRORS, register
from ndvq.errors import NonFiniteLossError, RankDiedError, StoppedBySignal
from ndvq.export import register as register_export
from ndvq.shard import register as register_shard

__all__ = ["main", "build_parser"]

_BUG = "ndvq: internal error (this is a bug in ndvq; please report it with the traceback above)"

_OVERRIDES_HELP = ("key=value overrides applied on top of the config, e.g. model.n_codes=1024 "
                   "train.learning_rate=3e-4 model.downsample=[4,4] (values are YAML)")


def _train_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train a model (no arguments: the default model on the built-in sample images)",
        description="Train a VQ-VAE / hierarchical VQ-VAE / KL-VAE. Without -c, the built-in default "
                    "(configs/default.yaml: a small VQ-VAE on built-in real images, a few minutes on 2 CPU "
                    "cores) is used. Outputs go to runs/<name>/: config.yaml, metrics.jsonl, tb/, "
                    "checkpoints/ (last + best-N) and samples/.",
        epilog="examples:\n  ndvq train\n  ndvq train -c configs/image/example.yaml data.root=photos/ "
               "model.n_codes=1024\n  ndvq train -c my.yaml train.devices=2          # DDP on 2 devices\n"
               "  ndvq train --resume runs/my-run train.max_steps=5000\n  ndvq train --print-config > my.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", type=Path, help="YAML, TOML or JSON config file (a medical vae_config.json "
                   "is detected and converted); default: the built-in default run")
    p.add_argument("--config-format", choices=["auto", "ndvq", "medical"], default="auto",
                   help="how to read -c: auto (default; a medical vae_config.json is recognised by its keys), "
                        "ndvq, or medical")
    p.add_argument("--resume", metavar="RUN", type=Path, help="continue runs/<name> (or a .ckpt) exactly where it "
                   "stopped; its config.yaml is the base config unless -c is given")
    p.add_argument("--init-from", metavar="DIR", type=Path, help="start from these weights (a save_pretrained "
                   "folder or a MONAI AutoencoderKL checkpoint, e.g. from `ndvq convert monai`); same as run.init_from")
    p.add_argument("--overwrite", action="store_true", help="start afresh in run.root/run.name even if it holds a "
                   "run (its files are deleted once its lock is held; refused while another train writes it)")
    p.add_argument("--print-config", action="store_true", help="print the fully resolved config as YAML and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=_OVERRIDES_HELP)
    p.set_defaults(func=_cmd_train)


def _model_parser(sub, name: str, help: str, description: str):
    p = sub.add_parser(name, help=help, description=description)
    p.add_argument("run", type=Path, metavar="RUN_OR_CKPT", help="run directory (uses checkpoints/last.ckpt) or a .ckpt file")
    return p


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _data_args(p, split_default: str) -> None:
    p.add_argument("--data", type=Path, help="data folder or one file (data.root); default: the run's own data config")
    p.add_argument("--split", choices=["train", "val", "all"], help=f"which split (default: {split_default})")
    p.add_argument("--batch-size", type=_positive_int, default=8, help="items per forward pass (default: 8)")
    p.add_argument("overrides", nargs="*", metavar="data.key=value", help="data overrides, e.g. data.kind=image data.channels=1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ndvq", description="ndvq: VQ-VAE and KL-VAE autoencoders for 1D/2D/3D data (audio, series, images, "
                                 "video, volumes). Run `ndvq <command> --help` for each command.")
    sub = parser.add_subparsers(dest="command", metavar="command")
    sub.required = True
    _train_parser(sub)
    p = _model_parser(sub, "eval", "PSNR, SSIM, MSE/MAE, codebook usage, perplexity and bit rate over a split",
                      "Evaluate a trained model over a whole split: PSNR, SSIM (2D/3D), MSE, MAE, the model's "
                      "losses, codebook usage and perplexity, bits per input element of the code stream (fixed "
                      "length and entropy). Prints a table and writes JSON.")
    _data_args(p, "'all' with --data, else 'val'")
    p.add_argument("--out", type=Path, help="JSON file (default: <run>/eval_<split>.json; with --rd <run>/rd.json)")
    p.add_argument("--rd", action="store_true", help="rate-distortion instead: each image file of --data compressed "
                   "to a real .ndvq file (bpp, PSNR, SSIM, MS-SSIM) against JPEG and WebP at the same size, BD-rate "
                   "(writes <run>/rd.json + rd.md, plotted by `ndvq report`)")
    p.set_defaults(func=_cmd_eval)
    p = _model_parser(sub, "encode", "write the integer codes of every item to an .npz",
                      "Encode every item of a split to integer codes (KL-VAE: latent means) for a downstream "
                      "prior. The .npz holds codes, file names, input and latent shapes; see docs/training.md.")
    _data_args(p, "all")
    p.add_argument("--out", type=Path, required=True, help="output .npz file")
    p.set_defaults(func=_cmd_encode)
    p = _model_parser(sub, "decode", "turn an encoded .npz back into files",
                      "Decode an `ndvq encode` file into files in the modality's own format (PNG, GIF/MP4, "
                      "WAV, NIfTI, CSV/NPY).")
    p.add_argument("codes", type=Path, help="the .npz written by `ndvq encode`")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(func=_cmd_decode)
    _codec_parsers(sub)
    _prior_parsers(sub)
    register(sub)  # doctor / report / tune
    register_convert(sub)  # convert
    register_export(sub)  # export
    register_shard(sub)  # shard
    return parser


def _prior_parsers(sub) -> None:
    p = sub.add_parser("prior", help="train an autoregressive prior over a run's codes (saved in RUN/prior)",
                       description="Train a small causal transformer over the codes of a VQ run (its train/val "
                                   "splits encoded with the frozen model); metrics.jsonl reports nll_bits per code. "
                                   "Starting again continues RUN/prior/checkpoints/last.ckpt. See docs/prior.md.")
    p.add_argument("run", type=Path, metavar="RUN", help="run directory of a VQ model")
    p.add_argument("-c", "--config", type=Path, help="prior config (configs/prior.yaml keys); default: the defaults")
    p.add_argument("--overwrite", action="store_true", help="start afresh even if RUN/prior holds a checkpoint")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="prior overrides, e.g. max_steps=2000 n_layers=6 (after an option: prior.max_steps=2000)")
    p.set_defaults(func=_cmd_prior)
    p = sub.add_parser("sample", help="sample new items from a run's prior and write them as files",
                       description="Sample items of the training item's shape from RUN/prior, decode them and write "
                                   "them in the modality's own format (PNG, MP4, WAV, NIfTI, CSV/NPY).")
    p.add_argument("run", type=Path, metavar="RUN", help="run directory with a trained prior")
    p.add_argument("--n", type=_positive_int, default=16, help="items to sample (default: 16)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1.0)")
    p.add_argument("--top-k", type=_positive_int, help="sample among the k most likely codes only")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--prompt", type=Path, help="video/audio/series file whose beginning is kept (the first half of "
                   "the time axis of the first tile) and continued")
    p.set_defaults(func=_cmd_sample)


def _cmd_prior(args) -> int:
    from ndvq.prior.train import train_prior

    result = train_prior(args.run, args.config, args.overrides, overwrite=args.overwrite)
    return 128 + (result.signal or 2) if result.stopped == "interrupted" else 0


def _cmd_sample(args) -> int:
    from ndvq.prior.sample import sample

    _check_out(args.out, want_dir=True)
    res = sample(args.run, args.n, args.out, temperature=args.temperature, top_k=args.top_k, seed=args.seed,
                 prompt=args.prompt)
    print(f"wrote {len(res.files)} file(s) to {args.out}")
    return 0


def _base_config(args) -> Path | None:
    """``-c``, else the ``config.yaml`` of the run that ``--resume`` names, else None (the default run)."""
    from ndvq.errors import ConfigError
    from ndvq.run.rundir import config_path, find_checkpoint, run_dir_of

    if args.resume is None:
        return args.config
    path = config_path(run_dir_of(find_checkpoint(args.resume)))  # a missing run: one-line error here
    if args.config is None and not path.is_file():
        raise ConfigError(f"{path.parent} has no config.yaml; pass the run's config with -c")
    return args.config or path


class _Chain:
    """``on_finish`` hooks called in turn, their results joined (a class, not a lambda: DDP pickles it)."""

    def __init__(self, *hooks):
        self.hooks = hooks

    def __call__(self, records: list[dict], run_dir) -> list:
        return [x for hook in self.hooks for x in hook(records, run_dir)]


def _cmd_train(args) -> int:
    from ndvq.config import config_to_yaml, load_config

    overrides = [*args.overrides, *([f"run.init_from={args.init_from}"] if args.init_from is not None else [])]
    cfg = load_config(_base_config(args), overrides,
                      config_format=args.config_format if args.config is not None else "auto")
    if args.print_config:
        print(config_to_yaml(cfg), end="")
        return 0
    from ndvq.codec.demo import demo_callback
    from ndvq.diagnostics.doctor import findings_callback, warning_callback
    from ndvq.run.train import train

    config = cfg.model_dump(mode="json")
    on_warning = warning_callback(config) if cfg.train.doctor_warnings else None
    findings, demo = findings_callback(config), demo_callback(cfg)  # demo: the default (samples) run with codes
    on_finish = findings if demo is None else _Chain(demo, findings)
    result = train(cfg, resume=args.resume, on_warning=on_warning, overwrite=args.overwrite, on_finish=on_finish)
    if result.stopped == "interrupted":
        return 128 + (result.signal or 2)  # 130 SIGINT, 143 SIGTERM
    return 0


def _check_out(out: Path | None, want_dir: bool) -> None:
    """``--out`` must not be a folder where a file is written, nor a file where a folder is."""
    from ndvq.errors import ConfigError

    if out is None or not out.exists():
        return
    if want_dir and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; expected a folder for the decoded files")
    if not want_dir and out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a folder; expected a file name")


def _cmd_eval(args) -> int:
    from ndvq.run.infer import evaluate, format_table

    _check_out(args.out, want_dir=False)
    if args.rd:
        return _cmd_eval_rd(args)
    res = evaluate(args.run, data=args.data, split=args.split, batch_size=args.batch_size, out=args.out,
                   overrides=args.overrides)
    print(format_table(res))
    return 0


def _cmd_eval_rd(args) -> int:
    from ndvq.codec.rd import evaluate_rd, format_rd_table
    from ndvq.errors import ConfigError

    if args.data is None:
        raise ConfigError("--rd needs --data: an image file or a folder of images to compress")
    res = evaluate_rd(args.run, args.data, out=args.out)
    print(format_rd_table(res))
    print(f"wrote {', '.join(res['written'])}")
    return 0


def _cmd_encode(args) -> int:
    from ndvq.run.infer import encode

    _check_out(args.out, want_dir=False)
    out = encode(args.run, args.out, data=args.data, split=args.split or "all", batch_size=args.batch_size,
                 overrides=args.overrides)
    print(f"wrote {out}")
    return 0


def _cmd_decode(args) -> int:
    from ndvq.run.infer import decode

    _check_out(args.out, want_dir=True)
    files = decode(args.run, args.codes, args.out)
    print(f"wrote {len(files)} file(s) to {args.out}")
    return 0


def _codec_parsers(sub) -> None:
    p = _model_parser(sub, "compress", "entropy-code files into .ndvq files (one per input)",
                      "Compress each file into a .ndvq file: its codes entropy-coded (ANS) under the run's prior, "
                      "or without one the run's code histogram, plus a header to restore it; see docs/compression.md.")
    p.add_argument("files", type=Path, nargs="+", metavar="FILE", help="input files (photo.png -> DIR/photo.ndvq)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--levels", type=_positive_int, help="keep the first K residual levels (residual quantizers; "
                   "variable rate from one model trained with quantizer_dropout); default: all")
    p.add_argument("--prior", choices=["auto", "prior", "none"], default="auto", help="probability model: the run's "
                   "prior if it has one (auto, default), the prior (required), or the code histogram (none)")
    p.add_argument("overrides", nargs="*", metavar="data.key=value", help="data overrides, as for encode")
    p.set_defaults(func=_cmd_compress)
    p = sub.add_parser("decompress", help="decode .ndvq files into files of their modality",
                       description="Decode .ndvq files into files in the modality's own format (as `ndvq decode` "
                                   "writes them). Each header names the run that compressed it; --run overrides it.")
    p.add_argument("files", type=Path, nargs="+", metavar="FILE.ndvq", help="files written by ndvq compress")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--run", type=Path, metavar="RUN_OR_CKPT", help="the run or checkpoint that compressed the "
                   "files (default: the one named in each file)")
    p.set_defaults(func=_cmd_decompress)


def _cmd_compress(args) -> int:
    from ndvq.codec import compress_files

    _check_out(args.out, want_dir=True)
    files = compress_files(args.run, args.files, args.out, levels=args.levels, prior=args.prior,
                           overrides=args.overrides)
    print(f"wrote {len(files)} file(s) to {args.out} ({sum(f.stat().st_size for f in files)} bytes)")
    return 0


def _cmd_decompress(args) -> int:
    from ndvq.codec import decompress_files

    _check_out(args.out, want_dir=True)
    files = decompress_files(args.files, args.out, run=args.run)
    print(f"wrote {len(files)} file(s) to {args.out}")
    return 0


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if text else type(e).__name__


def _names(cls: type) -> set[str]:
    return {cls.__name__}.union(*(_names(c) for c in cls.__subclasses__()))


_USER_ERROR_NAMES = set().union(*(_names(c) for c in USER_ERRORS))


def _worker_error(e: BaseException) -> tuple[int, str] | None:
    """``(exit code, line)`` for a user error raised in a spawned DDP worker (it arrives wrapped in a
    ``ProcessRaisedException`` whose last line is ``module.ErrorName: message``), else None."""
    if type(e).__name__ != "ProcessRaisedException":
        return None
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    name = lines[-1].split(":", 1)[0].rsplit(".", 1)[-1] if lines else ""
    if name == NonFiniteLossError.__name__:
        return 1, f"ndvq: {lines[-1]}"
    return (2, f"ndvq: error: {lines[-1]}") if name in _USER_ERROR_NAMES else None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ndvq`` console script; returns the exit code (see the module docstring)."""
    from ndvq.run.argv import split_overrides

    rest, overrides = split_overrides(sys.argv[1:] if argv is None else [str(a) for a in argv])
    parser = build_parser()
    args = parser.parse_args(rest)
    if overrides and not hasattr(args, "overrides"):
        parser.error(f"ndvq {args.command} takes no key=value overrides, got {overrides}")
    if overrides:
        args.overrides = [*(args.overrides or []), *overrides]
    with _console():
        return _dispatch(args)


@contextlib.contextmanager
def _console():
    """The command's console: ndvq's log warnings on stderr, one line each, and the Python warnings that
    repeat them (``ndvq.data.common.warn_skip`` / ``warn_data`` raise both) silenced. A data note is printed
    once per command (a split built again, e.g. with a fitted window, says the same things again)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(message)s"))
    said: set[str] = set()

    def once(record: logging.LogRecord) -> bool:
        if not record.name.startswith("ndvq.data"):
            return True
        new = record.getMessage() not in said
        said.add(record.getMessage())
        return new

    handler.addFilter(once)
    log = logging.getLogger("ndvq")
    log.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"ndvq(\.data)?: ", category=RuntimeWarning)
            yield
    finally:
        log.removeHandler(handler)


def _dispatch(args: argparse.Namespace) -> int:
    """Run the parsed command; map its errors to one line and an exit code (the module docstring)."""
    if os.environ.get("NDVQ_DEBUG"):
        return args.func(args) or 0
    try:
        return args.func(args) or 0
    except (NonFiniteLossError, RankDiedError) as e:
        print(f"ndvq: {_one_line(e)}", file=sys.stderr)
        return 1
    except StoppedBySignal as e:
        print(f"ndvq: {_one_line(e)}", file=sys.stderr)
        return 128 + e.signum
    except USER_ERRORS as e:
        print(f"ndvq: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ndvq: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped early (`ndvq doctor run | head`)
        try:  # point stdout at /dev/null so flushing it at exit does not raise again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is not a real file (captured)
            pass
        return 0
    except Exception as e:  # a bug, or a user error wrapped by a DDP worker
        wrapped = _worker_error(e)
        if wrapped is not None:
            print(wrapped[1], file=sys.stderr)
            return wrapped[0]
        traceback.print_exc()
        print(_BUG, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
