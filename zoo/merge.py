"""``python -m zoo.merge BASE ADAPTER OUT [--layout zoo|official|transformers]``: fold a LoRA
adapter folder into its base checkpoint and write the merged model as a checkpoint folder, which
loads, serves and evaluates like any other (no peft needed to read it)."""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.io.folder import LAYOUTS
from zoo.io.load import from_pretrained


def merge(base: str | Path, adapter: str | Path, out: str | Path, layout: str = "zoo") -> Path:
    """Write ``base`` + ``adapter`` merged to ``out`` in ``layout``; returns ``out``."""
    model = from_pretrained(base, adapter=adapter, merge_adapter=True)
    return model.save_pretrained(out, layout=layout)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m zoo.merge", description=__doc__)
    parser.add_argument("base", help="the base checkpoint folder (any layout)")
    parser.add_argument("adapter", help="the LoRA adapter folder (adapter_config.json + weights)")
    parser.add_argument("out", help="the folder to write the merged checkpoint to")
    parser.add_argument("--layout", choices=LAYOUTS, default="zoo")
    args = parser.parse_args(argv)
    print(merge(args.base, args.adapter, args.out, args.layout))


if __name__ == "__main__":
    main()
