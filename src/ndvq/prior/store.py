"""Where a trained prior lives (``RUN/prior/``), how it is saved and loaded, and its fingerprint.

``RUN/prior/config.json`` holds the prior's config and the code facts it was built for (``codebook_sizes``,
``n_grids``, ``max_coords``, the resolved ``block``, the training item's spatial shape);
``RUN/prior/model.safetensors`` its weights. ``checkpoints/``, ``metrics.jsonl`` and ``.lock`` sit next to
them while it trains (the run directory layout of :mod:`ndvq.run.rundir`).

Example:
    >>> load_prior("runs/my-run") is None        # doctest: +SKIP
    True
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ndvq.errors import CheckpointError
from ndvq.prior.config import validate_prior_config
from ndvq.prior.model import CodePrior
from ndvq.run.rundir import atomic_write

__all__ = ["prior_dir", "save_prior", "load_prior", "fingerprint", "build_prior", "FORMAT"]

FORMAT = 1
WEIGHTS = "model.safetensors"


def prior_dir(run_dir: str | Path) -> Path:
    """``RUN/prior``: the prior of a run."""
    return Path(run_dir) / "prior"


def build_prior(facts: dict) -> CodePrior:
    """A :class:`CodePrior` from the ``config.json`` dict (``prior`` keys + code facts)."""
    cfg = validate_prior_config(facts["prior"])
    return CodePrior(facts["codebook_sizes"], facts["n_grids"], facts["max_coords"], **cfg.model_args())


def fingerprint(facts: dict, state: dict[str, torch.Tensor]) -> str:
    """16 hex digits of SHA-256 over the config (canonical JSON) and every weight (name, dtype, shape, bytes)."""
    h = hashlib.sha256(json.dumps(facts, sort_keys=True).encode())
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{list(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def save_prior(run_dir: str | Path, facts: dict, prior: CodePrior) -> Path:
    """Write ``RUN/prior/config.json`` and ``model.safetensors`` atomically; returns the folder."""
    from safetensors.torch import save

    out = prior_dir(run_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in prior.state_dict().items()}
    atomic_write(out / WEIGHTS, lambda fh: fh.write(save(state)))
    atomic_write(out / "config.json", lambda fh: fh.write(json.dumps({**facts, "format": FORMAT}, indent=2).encode()))
    return out


def load_prior(run_dir: str | Path) -> tuple[CodePrior, dict] | None:
    """The trained prior of a run in eval mode and its ``config.json`` dict (with ``fingerprint``), or None
    when ``RUN/prior`` holds no trained prior.

    Raises:
        CheckpointError: the files exist but cannot be read or do not fit together (one line).
    """
    from safetensors.torch import load_file

    d = prior_dir(run_dir)
    if not (d / "config.json").is_file() or not (d / WEIGHTS).is_file():
        return None
    try:
        facts = json.loads((d / "config.json").read_text(encoding="utf-8"))
        facts.pop("format", None)
        prior = build_prior(facts)
        state = load_file(str(d / WEIGHTS))
        prior.load_state_dict(state)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"cannot load the prior in {str(d)!r}: {type(e).__name__}: "
                              f"{' '.join(str(e).split())[:200]}") from None
    return prior.eval(), {**facts, "fingerprint": fingerprint(facts, state)}
