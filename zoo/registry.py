"""Name -> constructor registries for every swappable part of the zoo, in the manner of timm.

A component module decorates its constructor with ``@register_encoder("name")`` (or decoder,
projector, mask, datamodule); ``create_encoder("name", **kwargs)`` builds it. Each registry
imports the package of its built-in components on its first lookup (so building a model never
imports the Lightning datamodules); third-party packages register
through the ``deepencoder_zoo.plugins`` entry-point group or a module path passed to
:func:`import_plugins` (the ``plugins`` list of a run config). A model config's ``plugins`` are
never imported while loading (:func:`check_plugins_loaded`): the caller allows them by name.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import pkgutil
import sys
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

PLUGIN_ENTRY_POINT_GROUP = "deepencoder_zoo.plugins"


class UnknownComponentError(KeyError):
    """Raised for a name no registry knows; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class Registry:
    """One kind of component (encoder, decoder, ...): names mapped to constructors."""

    def __init__(self, kind: str, builtin_package: str | None = None) -> None:
        self.kind = kind
        # imported on the first lookup, so that a lookup imports only its own kind (building
        # a model never imports the Lightning datamodules)
        self.builtin_package = builtin_package
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
        self._load_builtins()
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
        try:
            return constructor(**kwargs)
        except (ValueError, RuntimeError) as err:
            # torch reports a negative size as "negative dimension -1: [128, -1]": name the key
            negative = [
                f"{self.kind}.{key}={value}"
                for key, value in kwargs.items()
                if isinstance(value, int) and not isinstance(value, bool) and value < 0
            ]
            if not negative:
                raise
            raise ValueError(
                f"{self.kind} {name!r}: {', '.join(negative)} is negative; sizes and counts "
                f"must be >= 1 (building it failed with: {err})"
            ) from err

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style pattern, sorted."""
        self._load_builtins()
        return sorted(n for n in self._constructors if fnmatch.fnmatch(n, pattern))

    def summary(self, name: str) -> str:
        """First line of the constructor's docstring."""
        doc = inspect.getdoc(self.get(name)) or ""
        return doc.splitlines()[0] if doc else ""

    def __contains__(self, name: str) -> bool:
        self._load_builtins()
        return name in self._constructors

    def _load_builtins(self) -> None:
        if self.builtin_package is not None:
            importlib.import_module(self.builtin_package)
        load_plugin_entry_points()


ENCODERS = Registry("encoder", "encoders")
DECODERS = Registry("decoder", "decoders")
PROJECTORS = Registry("projector", "zoo.model.projectors")
MASKS = Registry("mask", "masks")
DATAMODULES = Registry("datamodule", "lightning_modules")
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

_entry_points_loaded = False


def load_plugin_entry_points() -> None:
    """Import the installed packages' plugin modules (``deepencoder_zoo.plugins``), once."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry_point in entry_points(group=PLUGIN_ENTRY_POINT_GROUP):
        entry_point.load()


def import_submodules(package: str) -> None:
    """Import every module of ``package`` (from its ``__init__``), so that a component module
    registers itself by existing, with no import list to edit."""
    for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
        importlib.import_module(f"{package}.{module.name}")


class PluginNotAllowedError(ImportError):
    """A model config names plugin modules that the caller has not allowed (imported)."""


def _module_names(modules: Any, source: str) -> list[str]:
    if isinstance(modules, str) or not all(isinstance(m, str) for m in modules or []):
        raise ValueError(f"{source}: expected a list of module names, got {modules!r}")
    return list(modules or [])


def check_plugins_loaded(modules: Any, source: str = "the model config's plugins") -> None:
    """Refuse to build a model whose ``plugins`` are not imported yet.

    A checkpoint's config could name any module, so loading never imports one; the caller
    allows a plugin by name (``from_pretrained(path, plugins=[...])``, ``zoo.ocr --plugin``,
    ``plugins=[...]`` of a run config), which imports it before the model is built.
    """
    missing = [m for m in _module_names(modules, source) if m not in sys.modules]
    if missing:
        listed = ", ".join(missing)
        raise PluginNotAllowedError(
            f"{source} names plugin module(s) {missing}, which loading never imports by itself "
            f"(a checkpoint could name any code); if you trust them, allow them by name: "
            f"from_pretrained(path, plugins={missing!r}), python -m zoo.ocr --plugin "
            f"{missing[0]}, or plugins=[{listed}] on the zoo.evaluate / zoo.train command line"
        )


def import_plugins(modules: Iterable[str]) -> None:
    """Import user modules that register components: the ones a caller allows by name (the
    ``plugins`` list of a run config, ``plugins=`` of ``from_pretrained``)."""
    for module in _module_names(modules, "plugins"):
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ImportError(f"plugin module {module!r} could not be imported: {err}") from err
