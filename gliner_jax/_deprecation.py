"""Old import paths kept working, with a DeprecationWarning, after a public name moved to another module."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def moved_names(old_module: str, new_homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level `__getattr__` for `old_module` that serves each name of `new_homes` (name -> the module it
    now lives in) from its new home, warning once per access that the old path is deprecated."""

    def __getattr__(name: str) -> Any:
        if name not in new_homes:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        home = new_homes[name]
        warnings.warn(
            f"{old_module}.{name} moved to {home}.{name}; the old path will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(home), name)

    return __getattr__
