"""Packages that load each public name's submodule on first use (PEP 562).

``stabstat.stats`` and ``stabstat.analysis`` export many names from many submodules; a CLI
command uses a few of them. :func:`lazy_package` makes a package import a submodule only when
one of its names is first read (``compare`` then never loads decompose, plan, aso, ...).

One subtlety: the import system binds every loaded submodule to its name on the package
(``stabstat.analysis.compare = <module>``). Where a public function has its submodule's name
(compare, variance, aso, expected_max, ...), the package keeps the function under that name,
as it did when it imported everything eagerly.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Mapping
from typing import Any

__all__ = ["lazy_package"]


class _LazyPackage(types.ModuleType):
    """A package module whose ``_LAZY`` maps public name -> defining submodule."""

    def __getattr__(self, name: str) -> Any:
        # Called only when normal lookup fails: the name is not loaded yet.
        mod = self.__dict__.get("_LAZY", {}).get(name)
        if mod is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{self.__name__}.{mod}"), name)
        setattr(self, name, value)  # later lookups are plain attribute reads
        return value

    def __dir__(self) -> list[str]:
        return sorted(set(self.__dict__) | set(self.__dict__.get("_LAZY", {})))

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and self.__dict__.get("_LAZY", {}).get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


def lazy_package(package: str, lazy: Mapping[str, str]) -> None:
    """Make the (already executing) package ``package`` load ``lazy``'s names on first use.

    lazy: public name -> the submodule (relative name) that defines it. Call it at the end of
    the package's ``__init__``.
    """
    module = sys.modules[package]
    module.__dict__["_LAZY"] = dict(lazy)
    module.__class__ = _LazyPackage
