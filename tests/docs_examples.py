"""Import the example modules of ``docs/examples`` the way a reader who copies them would."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

DOCS_EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def load_example(name: str) -> ModuleType:
    """The module ``docs/examples/<name>.py``, imported under its file name."""
    spec = importlib.util.spec_from_file_location(name, DOCS_EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pydantic resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module
