"""Lazy references: register at start-up, import the heavy module on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy(module: str, attr: str) -> Callable[..., Any]:
    """A function that imports ``module`` on its first call and calls ``module.attr``.

    Plugins register examples, model factories and workloads at start-up; this keeps
    their model code (and diffusers, timm …) out of the import until one is used.

    Args:
        module: Dotted module name, e.g. ``"blockdance_dit.examples"``.
        attr: The function to call in it.
    """

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    call.__name__ = attr
    call.__qualname__ = f"lazy({module}.{attr})"
    return call
