"""``key=value`` overrides at any position of an ``ndvq`` command line.

argparse accepts a positional list only where it is declared (right after ``RUN`` for ``ndvq eval``),
so ``ndvq eval RUN --data D data.channels=3`` failed with "unrecognized arguments". :func:`split_overrides`
takes every override token out of the argument list first; the CLI parses the rest and appends them.

An override is a token ``section.key=value`` (a dotted name of letters, digits and ``_`` before the
first ``=``; ``section.sub.key=value`` too). Paths never match: they do not start with a bare dotted
name followed by ``=`` (``./a=b``, ``/x/y=z`` and ``runs/a=b`` keep their place). Everything after a
lone ``--`` is left alone.

Example:
    >>> split_overrides(["eval", "runs/a", "--data", "d", "data.channels=3", "--split", "val"])
    (['eval', 'runs/a', '--data', 'd', '--split', 'val'], ['data.channels=3'])
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["split_overrides", "is_override"]

_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_\-]*)+=")


def is_override(token: str) -> bool:
    """Whether ``token`` is a ``section.key=value`` override."""
    return bool(_OVERRIDE.match(token))


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(the other arguments in order, the overrides in order)`` of a command line (see the module docstring).

    Args:
        argv: the arguments after the program name, e.g. ``sys.argv[1:]``.
    """
    rest, overrides = [], []
    for k, token in enumerate(argv):
        if token == "--":
            rest += list(argv[k:])
            break
        (overrides if is_override(token) else rest).append(token)
    return rest, overrides
