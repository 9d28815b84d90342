"""ndvq.objectives imports only torch, ndvq.nd, ndvq.errors and its own package."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ndvq.objectives

PACKAGE = Path(ndvq.objectives.__file__).parent
ALLOWED_NDVQ = {"ndvq.nd", "ndvq.errors"}
ALLOWED_THIRD_PARTY = {"torch", "safetensors"}  # safetensors: .safetensors perceptual weights only


def _imports(path: Path) -> set[str]:
    """Every absolute module a file imports (``from ndvq import nd`` counts as ``ndvq.nd``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            if node.module == "ndvq":
                names.update(f"ndvq.{alias.name}" for alias in node.names)
            else:
                names.add(node.module)
    return names


def test_objectives_import_only_leaves_and_themselves():
    files = sorted(PACKAGE.glob("*.py"))
    assert {f.name for f in files} >= {"objective.py", "perceptual.py", "adversarial.py", "kl.py",
                                       "reconstruction.py", "discriminator.py", "__init__.py"}
    for path in files:
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "ndvq":
                assert name in ALLOWED_NDVQ or name.startswith("ndvq.objectives."), f"{path.name}: {name}"
            else:
                assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY, f"{path.name}: {name}"


def test_importing_objectives_loads_no_models_networks_or_config():
    code = ("import sys, ndvq.objectives\n"
            "bad = sorted(m for m in sys.modules if m.startswith(('ndvq.models', 'ndvq.networks', "
            "'ndvq.config', 'ndvq.losses', 'ndvq.train', 'ndvq.run')))\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
