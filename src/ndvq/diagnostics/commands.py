"""The ``doctor``, ``report`` and ``tune`` subcommands of ``ndvq`` (argparse).

``ndvq.cli`` calls :func:`register` with its subparsers; each subcommand sets ``func`` to a
handler ``handler(args) -> int`` (exit code). Bad input (a missing run folder, an unreadable
space file, ...: the :data:`USER_ERRORS`) prints one line ``ndvq <command>: error: ...`` to stderr and
returns 2; anything else is a bug and reaches ``ndvq.cli.main`` (traceback, exit 1).

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="ndvq")
    >>> register(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["doctor", "runs/x", "--json"])
    >>> args.json, args.func.__name__
    (True, 'run_doctor')
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ndvq.errors import NdvqError

__all__ = ["USER_ERRORS", "register", "run_doctor", "run_report", "run_tune"]

USER_ERRORS = (NdvqError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
"""Exceptions that are the user's doing (bad input, a path that is missing or not readable): one line, exit 2."""


def _fail(command: str, message: str) -> int:
    print(f"ndvq {command}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def register(subparsers) -> None:
    """Add ``doctor``, ``report`` and ``tune`` to an argparse subparsers object."""
    p = subparsers.add_parser("doctor", help="diagnose a run: findings with ranked key=value fixes",
                              description="Read a run's metrics.jsonl and config.yaml (running or finished) and print "
                                          "findings, most important first, each with what was observed, the likely "
                                          "cause and key=value overrides to try with `ndvq train`.")
    p.add_argument("run", help="run folder (runs/<name>)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--log", action="append", default=[], metavar="FILE",
                   help="crash log to scan too (e.g. the saved stderr of a run that died out of memory); repeatable")
    p.set_defaults(func=run_doctor)

    p = subparsers.add_parser("report", help="self-contained HTML report of one or more runs",
                              description="Write one offline HTML file with loss curves, perplexity/usage, a code-usage "
                                          "histogram over the val split, reconstruction samples, the doctor's findings "
                                          "and the resolved config. Several runs are overlaid.")
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--out", "-o", default=None, help="output .html (default <run>/report.html, or ./report.html for several runs)")
    p.add_argument("--no-encode", action="store_true",
                   help="do not load the checkpoint to encode the val split (use a saved code_usage.json if any)")
    p.add_argument("--max-items", type=int, default=256, help="val items encoded for the usage histogram (default 256)")
    p.set_defaults(func=run_report)

    p = subparsers.add_parser("tune", help="Optuna hyperparameter search over config keys",
                              description="Each trial is a short `ndvq train` run with the sampled key=values; bad "
                                          "trials are pruned on intermediate val loss. The study is an SQLite file in "
                                          "the study folder, so running the same command again resumes it.")
    p.add_argument("-c", "--config", required=True, help="base config file (YAML/TOML/JSON)")
    p.add_argument("--space", required=True, help="search space YAML (see docs/tuning.md)")
    p.add_argument("--trials", type=int, required=True, help="total finished trials wanted (a resumed study counts earlier ones)")
    p.add_argument("--study-dir", default=None, help="study folder (default runs/tune-<config stem>)")
    p.add_argument("--study-name", default=None, help="Optuna study name (default: the study folder's name)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    p.add_argument("overrides", nargs="*", help="key=value overrides applied to the base config of every trial")
    p.set_defaults(func=run_tune)


def run_doctor(args: argparse.Namespace) -> int:
    from ndvq.diagnostics.doctor import diagnose_run, findings_to_json, format_findings

    try:
        findings = diagnose_run(args.run, logs=args.log)
    except USER_ERRORS as e:
        return _fail("doctor", e)
    if args.json:
        print(findings_to_json(findings, args.run))
    else:
        print(format_findings(findings, str(args.run)))
    return 0


def run_report(args: argparse.Namespace) -> int:
    from ndvq.diagnostics.report import write_report

    if args.max_items < 1:
        return _fail("report", f"--max-items must be >= 1, got {args.max_items}")
    try:
        out = write_report(args.runs, args.out, encode=not args.no_encode, max_items=args.max_items)
    except USER_ERRORS as e:
        return _fail("report", e)
    print(f"report written to {out}")
    return 0


def run_tune(args: argparse.Namespace) -> int:
    from ndvq.diagnostics.tune import tune

    if args.trials < 1:
        return _fail("tune", f"--trials must be >= 1, got {args.trials}")
    study_dir = Path(args.study_dir) if args.study_dir else Path("runs") / f"tune-{Path(args.config).stem}"
    try:
        result = tune(args.config, args.space, args.trials, study_dir, overrides=args.overrides,
                      study_name=args.study_name, seed=args.seed)
    except USER_ERRORS as e:
        return _fail("tune", e)
    except KeyboardInterrupt:
        print(f"\nndvq tune: interrupted; run the same command again to resume the study in {study_dir}", file=sys.stderr)
        return 130
    print(result.table)
    print(f"best config: {result.best_config_path}")
    if result.importance_path:
        print(f"parameter importances: {result.importance_path}")
    return 0
