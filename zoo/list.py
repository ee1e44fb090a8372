"""``python -m zoo.list [PATTERN]``: every registered component with its one-line description."""

from __future__ import annotations

import argparse

from zoo.registry import REGISTRIES


def format_components(pattern: str = "*") -> str:
    """A text table of the registered components whose names match ``pattern``."""
    lines = []
    for kind, registry in REGISTRIES.items():
        names = registry.names(pattern)
        if not names:
            continue
        lines.append(f"{kind}s:")
        width = max(len(n) for n in names)
        lines.extend(f"  {n:<{width}}  {registry.summary(n)}" for n in names)
    return "\n".join(lines) if lines else f"no component matches {pattern!r}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m zoo.list", description=__doc__)
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style name filter")
    print(format_components(parser.parse_args(argv).pattern))


if __name__ == "__main__":
    main()
