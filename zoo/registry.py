"""Name -> constructor registries for every swappable part of the zoo, in the manner of timm.

A component module decorates its constructor with ``@register_encoder("name")`` (or decoder,
projector, mask, datamodule); ``create_encoder("name", **kwargs)`` builds it. Built-in
components register themselves when their package is imported; third-party packages register
through the ``deepencoder_zoo.plugins`` entry-point group or a module path passed to
:func:`import_plugins` (the ``plugins`` list of a run config).
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

BUILTIN_PACKAGES = ("encoders", "decoders", "masks", "zoo.projectors", "lightning_modules")
PLUGIN_ENTRY_POINT_GROUP = "deepencoder_zoo.plugins"


class UnknownComponentError(KeyError):
    """Raised for a name no registry knows; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class Registry:
    """One kind of component (encoder, decoder, ...): names mapped to constructors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._constructors: dict[str, Callable[..., Any]] = {}

    def register(self, name: str | None = None) -> Callable[[F], F]:
        """Decorator registering a class or factory under ``name`` (default: its ``__name__``)."""

        def decorator(constructor: F) -> F:
            key = name or constructor.__name__
            existing = self._constructors.get(key)
            if existing is not None and existing is not constructor:
                raise ValueError(
                    f"{self.kind} {key!r} is already registered by "
                    f"{existing.__module__}.{existing.__qualname__}"
                )
            self._constructors[key] = constructor
            return constructor

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        load_builtin_components()
        try:
            return self._constructors[name]
        except KeyError:
            valid = ", ".join(sorted(self._constructors)) or "(none registered)"
            raise UnknownComponentError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s: {valid}"
            ) from None

    def create(self, name: str, **kwargs: Any) -> Any:
        """Build the component registered under ``name`` with keyword arguments."""
        constructor = self.get(name)
        try:
            inspect.signature(constructor).bind(**kwargs)
        except TypeError as err:
            raise TypeError(f"{self.kind} {name!r}: {err}") from None
        return constructor(**kwargs)

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style pattern, sorted."""
        load_builtin_components()
        return sorted(n for n in self._constructors if fnmatch.fnmatch(n, pattern))

    def summary(self, name: str) -> str:
        """First line of the constructor's docstring."""
        doc = inspect.getdoc(self.get(name)) or ""
        return doc.splitlines()[0] if doc else ""

    def __contains__(self, name: str) -> bool:
        load_builtin_components()
        return name in self._constructors


ENCODERS = Registry("encoder")
DECODERS = Registry("decoder")
PROJECTORS = Registry("projector")
MASKS = Registry("mask")
DATAMODULES = Registry("datamodule")
REGISTRIES = {r.kind: r for r in (ENCODERS, DECODERS, PROJECTORS, MASKS, DATAMODULES)}

register_encoder = ENCODERS.register
register_decoder = DECODERS.register
register_projector = PROJECTORS.register
register_mask = MASKS.register
register_datamodule = DATAMODULES.register

create_encoder = ENCODERS.create
create_decoder = DECODERS.create
create_projector = PROJECTORS.create
create_mask = MASKS.create
create_datamodule = DATAMODULES.create

_builtins_loaded = False


def load_builtin_components() -> None:
    """Import the zoo's own component packages and the installed plugins, once."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for package in BUILTIN_PACKAGES:
        importlib.import_module(package)
    for entry_point in entry_points(group=PLUGIN_ENTRY_POINT_GROUP):
        entry_point.load()


def import_plugins(modules: Iterable[str]) -> None:
    """Import user modules that register components (the ``plugins`` list of a config)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ImportError(f"plugin module {module!r} could not be imported: {err}") from err
