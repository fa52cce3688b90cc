"""Import the repository's files that are not package modules: the example modules of
``docs/examples`` (the way a reader who copies them would), ``scripts/`` and
``benchmarks/``. On the tests' import path (``pythonpath`` in pyproject.toml)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
DOCS_EXAMPLES = REPO / "docs" / "examples"


def load_file(path: Path, name: str) -> ModuleType:
    """The module at ``path``, imported under ``name`` and entered in ``sys.modules``
    (pydantic and dataclasses resolve annotations through it)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_example(name: str) -> ModuleType:
    """The module ``docs/examples/<name>.py``, imported under its file name."""
    return load_file(DOCS_EXAMPLES / f"{name}.py", name)


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as a module named ``<name>_script``."""
    return load_file(REPO / "scripts" / f"{name}.py", f"{name}_script")


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module named ``<name>_benchmark``."""
    return load_file(REPO / "benchmarks" / f"{name}.py", f"{name}_benchmark")
