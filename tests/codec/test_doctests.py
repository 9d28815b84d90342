"""The examples in the codec modules' docstrings run as written."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["ndvq.codec.entropy", "ndvq.codec.format", "ndvq.codec.histogram", "ndvq.codec.coding",
           "ndvq.codec.levels", "ndvq.codec.files"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and (result.attempted > 0 or name.endswith("files"))
