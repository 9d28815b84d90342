"""The run directory: the one owner of its layout, its checkpoint lookup, its metrics and its model facts.

Layout (docs/design.md)::

    runs/<name>/ config.yaml  model.json  metrics.jsonl  tb/  checkpoints/{last,best-stepNNNNNNN}.ckpt  samples/

Everyone asks this module where things are instead of joining paths by hand. It imports only the
standard library, ``yaml`` and :mod:`ndvq.errors`, so the doctor and the report can use it without
torch or the training engine.

Example:
    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp())
    >>> write_model_facts(run, {"class": "Autoencoder", "args": {}, "codebook_sizes": [512],
    ...                         "downsample": [4, 4], "code_shapes": None, "n_parameters": 10})
    >>> read_model_facts(run)["codebook_sizes"]
    [512]
    >>> run_dir_of(run / "checkpoints" / "last.ckpt") == run
    True
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import yaml

from ndvq.errors import CheckpointError, ConfigError, RunInUseError

__all__ = ["config_path", "metrics_path", "checkpoints_dir", "samples_dir", "model_facts_path",
           "find_checkpoint", "run_dir_of", "check_run_dir", "read_metrics", "MetricsRecords", "read_config",
           "write_model_facts", "read_model_facts", "MODEL_FACTS_KEYS", "lock_path", "RunLock", "check_run_name",
           "remove_temp_files", "match_dir_mode", "clear_run_dir", "has_progress"]

MODEL_FACTS_KEYS = ("class", "args", "codebook_sizes", "downsample", "code_shapes", "n_parameters")
"""The keys of ``model.json`` (docs/design.md "Facts and their owners")."""

_BEST = re.compile(r"best-step(\d+)")


def config_path(run_dir: str | Path) -> Path:
    """``<run>/config.yaml``: the resolved config of the run."""
    return Path(run_dir) / "config.yaml"


def metrics_path(run_dir: str | Path) -> Path:
    """``<run>/metrics.jsonl``: one JSON record per logged step."""
    return Path(run_dir) / "metrics.jsonl"


def checkpoints_dir(run_dir: str | Path) -> Path:
    """``<run>/checkpoints``: ``last.ckpt`` and the kept ``best-stepNNNNNNN.ckpt`` files."""
    return Path(run_dir) / "checkpoints"


def samples_dir(run_dir: str | Path) -> Path:
    """``<run>/samples``: reconstruction samples, one ``stepNNNNNNN`` folder per sampling."""
    return Path(run_dir) / "samples"


def lock_path(run_dir: str | Path) -> Path:
    """``<run>/.lock``: held by the one ``ndvq train`` writing the run (:class:`RunLock`)."""
    return Path(run_dir) / ".lock"


def model_facts_path(run_dir: str | Path) -> Path:
    """``<run>/model.json``: the model's facts, written at train start (:func:`write_model_facts`)."""
    return Path(run_dir) / "model.json"


# ----------------------------------------------------------------------------- name, lock, clean-up


def check_run_name(name: str | None) -> str | None:
    """``run.name`` must be a plain folder name: no path separator, not ``.``/``..``, not absolute.

    Raises:
        ConfigError: naming the value (one line).

    Example:
        >>> check_run_name("my-run")
        'my-run'
    """
    if name is None:
        return None
    bad = (not name.strip() or name in (".", "..") or "/" in name or "\\" in name or os.sep in name
           or (os.altsep and os.altsep in name) or "\0" in name or Path(name).is_absolute())
    if bad:
        raise ConfigError(f"run.name={name!r} must be a plain folder name (no '/', no '..'); the run goes to "
                          f"run.root/run.name, set run.root for another folder")
    return name


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class RunLock:
    """One writer per run directory: ``<run>/.lock`` holds ``{"pid", "host", "started"}`` of the holder.

    :meth:`acquire` creates the file exclusively (``O_CREAT | O_EXCL``); a lock whose pid is dead on this
    host is stale and taken over with a warning on stderr; a live holder (or one on another host) is a
    one-line :class:`~ndvq.errors.RunInUseError`. :meth:`release` removes the file if it is still ours.

    Args:
        run_dir: the run directory (created if missing; :attr:`created` tells whether this lock made it).

    Example:
        >>> import tempfile
        >>> with RunLock(Path(tempfile.mkdtemp()) / "run") as lock:
        ...     lock.path.is_file()
        True
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir, self.path, self.created, self.held = Path(run_dir), lock_path(run_dir), False, False
        self._made: list[Path] = []  # folders this lock created, the run directory first

    def acquire(self) -> RunLock:
        missing = [p for p in (self.run_dir, *self.run_dir.parents) if not p.exists()]
        try:
            self.run_dir.mkdir(parents=True)
            self._made = missing
            self.created = True
        except FileExistsError:
            if not self.run_dir.is_dir():
                raise ConfigError(f"run directory {str(self.run_dir)!r} is a file; choose another run.name") from None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                self._take_over_if_stale(me["host"])
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.held = True
            return self
        raise RunInUseError(f"cannot lock {str(self.path)!r}: another process keeps creating it")

    def _take_over_if_stale(self, host: str) -> None:
        """Remove a stale lock (dead pid on this host, or unreadable); raise for a live holder."""
        try:
            holder = json.loads(self.path.read_text())
            pid, where, since = int(holder["pid"]), str(holder["host"]), str(holder.get("started", "?"))
        except FileNotFoundError:
            return
        except (ValueError, KeyError, TypeError, OSError):
            holder = None
        if holder is not None and (where != host or _pid_alive(pid)):
            raise RunInUseError(f"run directory {str(self.run_dir)!r} is in use by ndvq train (pid {pid} on "
                                f"{where}, since {since}); wait for it, stop it, or choose another run.name "
                                f"(if that process is gone, delete {self.path})")
        what = f"pid {holder['pid']} on {holder['host']} is gone" if holder else "the file is unreadable"
        print(f"ndvq: warning: taking over the stale lock {self.path} ({what})", file=sys.stderr)
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock file if this process still holds it."""
        if not self.held:
            return
        self.held = False
        try:
            if json.loads(self.path.read_text()).get("pid") == os.getpid():
                self.path.unlink()
        except (OSError, ValueError):
            pass

    def remove_run_dir(self) -> None:
        """Remove the run directory this lock created (a start that failed before its first step)."""
        self.release()
        if self.created:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            for parent in self._made[1:]:  # the parents it made, while they are empty
                try:
                    parent.rmdir()
                except OSError:
                    break

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def clear_run_dir(run_dir: str | Path) -> None:
    """``ndvq train --overwrite``: remove everything in the run directory but its lock."""
    run = Path(run_dir)
    for p in run.iterdir():
        if p.name != lock_path(run).name:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def has_progress(run_dir: str | Path) -> bool:
    """The run has a checkpoint or a metrics record (a start that got this far keeps its directory)."""
    return any(checkpoints_dir(run_dir).glob("*.ckpt")) or bool(read_metrics(run_dir))


def remove_temp_files(run_dir: str | Path) -> list[Path]:
    """Delete the temporary files an interrupted write left (``checkpoints/.*.tmp``, ``.model.json.*.tmp``,
    ``metrics.jsonl.tmp``) and return them."""
    run = Path(run_dir)
    found = [*checkpoints_dir(run).glob(".*.tmp"), *run.glob(".*.tmp"), *run.glob("*.jsonl.tmp")]
    for p in found:
        p.unlink(missing_ok=True)
    return found


def atomic_write(path: str | Path, write) -> Path:
    """Write ``path`` atomically: ``write(binary file)`` fills a temp file in the same folder, which is
    flushed to disk, given the run directory's file mode and renamed over ``path``; a crash leaves the
    previous file intact and no temp file behind (one left by ``kill -9`` is removed at the next start).

    Args:
        path: the file to write.
        write: ``f(fh)`` writing the content to the open binary file ``fh``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        match_dir_mode(tmp)  # mkstemp makes 0600; the file gets the mode of the run's other files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def match_dir_mode(path: str | Path) -> None:
    """Give a file written through ``mkstemp`` (mode 0600) the mode its folder's files get: 0666 & ~umask."""
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(path, 0o666 & ~umask)
    except OSError:
        pass


# ----------------------------------------------------------------------------- checkpoints


def _best_step(p: Path) -> int:
    m = _BEST.search(p.name)
    return int(m.group(1)) if m else -1


def find_checkpoint(path: str | Path, best: bool = False) -> Path:
    """The checkpoint file that ``path`` names.

    Args:
        path: a run directory, its ``checkpoints`` folder, or a ``.ckpt`` file.
        best: prefer the newest ``best-step*.ckpt`` (the lowest validation losses are kept) over
            ``last.ckpt``. Default False: ``last.ckpt``.

    Raises:
        CheckpointError: ``path`` does not exist or holds no checkpoint (one line).

    Example:
        >>> find_checkpoint("runs/my-run")            # doctest: +SKIP
        PosixPath('runs/my-run/checkpoints/last.ckpt')
    """
    p = Path(path)
    if p.is_file():
        return p
    if not p.exists():
        raise CheckpointError(f"{str(p)!r} does not exist (expected a run directory or a .ckpt file)")
    folder = checkpoints_dir(p) if checkpoints_dir(p).is_dir() else p
    if best:
        kept = sorted(folder.glob("best-step*.ckpt"), key=_best_step)
        if kept:
            return kept[-1]
    if (folder / "last.ckpt").is_file():
        return folder / "last.ckpt"
    raise CheckpointError(f"no checkpoint in {str(p)!r} (looked for checkpoints/last.ckpt)")


def run_dir_of(ckpt_path: str | Path) -> Path:
    """The run directory of a checkpoint file: ``<run>/checkpoints/x.ckpt -> <run>``; a checkpoint
    outside a ``checkpoints`` folder belongs to the folder it is in."""
    ckpt = Path(ckpt_path)
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def check_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path when it is a run directory (it has ``metrics.jsonl``).

    Raises:
        CheckpointError: the folder does not exist or is not a run directory (one line).
    """
    p = Path(run_dir)
    if not p.is_dir():
        raise CheckpointError(f"run folder {str(p)!r} does not exist")
    if not metrics_path(p).is_file():
        raise CheckpointError(f"{str(p)!r} is not a run folder: no metrics.jsonl in it")
    return p


# ----------------------------------------------------------------------------- metrics and config


class MetricsRecords(list):
    """The records of a ``metrics.jsonl`` (a list of dicts); ``skipped`` counts the malformed lines."""

    skipped: int = 0


def read_metrics(path: str | Path) -> MetricsRecords:
    """Read ``metrics.jsonl`` (the only reader): one dict per line.

    Blank lines are ignored; lines that are not a JSON object (a half-written last line of a running
    run, a corrupted line) are skipped and counted in ``.skipped``. A missing file gives no records.

    Args:
        path: the ``metrics.jsonl`` file or its run directory.
    """
    p = Path(path)
    if p.is_dir():
        p = metrics_path(p)
    out = MetricsRecords()
    if not p.is_file():
        return out
    with open(p, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                rec = None
            if isinstance(rec, dict):
                out.append(rec)
            else:
                out.skipped += 1
    return out


def read_config(run_dir: str | Path) -> dict:
    """The run's ``config.yaml`` as a plain dict (``{}`` when the run has none).

    Raises:
        ConfigError: the file is not YAML or not a mapping (one line).
    """
    p = config_path(run_dir)
    if not p.is_file():
        return {}
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot read {str(p)!r}: {' '.join(str(e).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{str(p)!r} should hold a mapping of config sections, got {type(data).__name__}")
    return data


# ----------------------------------------------------------------------------- model facts


def write_model_facts(run_dir: str | Path, facts: dict) -> Path:
    """Write ``model.json`` atomically (temp file + ``os.replace``) and return its path.

    Args:
        run_dir: the run directory (created if missing).
        facts: ``{"class", "args", "codebook_sizes", "downsample", "code_shapes", "n_parameters"}``
            (``ndvq.build.model_facts``); JSON-able.

    Raises:
        ValueError: a key is missing (a programming error, not a user error).
    """
    missing = [k for k in MODEL_FACTS_KEYS if k not in facts]
    if missing:
        raise ValueError(f"model facts lack {missing}; expected the keys {list(MODEL_FACTS_KEYS)}")
    return atomic_write(model_facts_path(run_dir), lambda fh: fh.write(json.dumps(facts, indent=2).encode()))


def read_model_facts(run_dir: str | Path) -> dict | None:
    """The run's ``model.json`` as a dict, or None when the run has none (recorded before it existed).

    Raises:
        CheckpointError: the file is not JSON or lacks a key (one line).
    """
    p = model_facts_path(run_dir)
    if not p.is_file():
        return None
    try:
        facts = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read {str(p)!r}: {' '.join(str(e).split())}") from None
    if not isinstance(facts, dict) or not isinstance(facts.get("codebook_sizes"), list):
        raise CheckpointError(f"{str(p)!r} is not a model facts file: expected a mapping with the keys "
                              f"{list(MODEL_FACTS_KEYS)}")
    missing = [k for k in MODEL_FACTS_KEYS if k not in facts]
    if missing:
        raise CheckpointError(f"{str(p)!r} lacks {missing}; expected the keys {list(MODEL_FACTS_KEYS)}")
    return facts
