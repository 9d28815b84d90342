"""Every ```python block of the Python API guide (and of README.md, when it has any) runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "docs" / "python_api.md", ROOT / "README.md"]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(path: Path) -> list[str]:
    """The contents of the ```python fenced blocks of a Markdown file."""
    return FENCE.findall(path.read_text()) if path.is_file() else []


CASES = [pytest.param(block, id=f"{path.name}-{i}")
         for path in DOCS for i, block in enumerate(python_blocks(path))]


def test_the_guide_has_an_example_per_dimensionality():
    blocks = python_blocks(DOCS[0])
    for n_dims in (1, 2, 3):
        assert any(f"n_dims={n_dims}" in b for b in blocks), n_dims


@pytest.mark.parametrize("code", CASES)
def test_python_block_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write model folders
    exec(compile(code, "<markdown>", "exec"), {"__name__": "__docs__"})
