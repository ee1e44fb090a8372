"""``python -m zoo.reading_order``: ground-truth and predicted reading order drawn over pages.

python -m zoo.reading_order PAGE_IMAGE... --ground-truth GT.json --predictions DIR --out DIR
python -m zoo.reading_order --images DIR --ground-truth GT.json --predictions DIR --out DIR
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from zoo.eval.reading_order_pictures import draw_pages


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.reading_order",
        description="Draw ground-truth and predicted reading order over OmniDocBench pages.",
    )
    parser.add_argument(
        "pages", nargs="*", type=Path, help="page images (default: all of --images)"
    )
    parser.add_argument("--ground-truth", required=True, type=Path, help="OmniDocBench JSON")
    parser.add_argument("--predictions", required=True, type=Path, help="folder of <page>.md")
    parser.add_argument("--images", type=Path, help="folder of the page images")
    parser.add_argument("--out", type=Path, default=Path("reading_order"), help="output folder")
    args = parser.parse_args(argv)
    if not args.pages and args.images is None:
        parser.error("give page images or --images DIR")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    groups: dict[Path, list[str]] = {}
    for image in args.pages:
        groups.setdefault(image.parent, []).append(image.name)
    jobs = groups.items() if groups else [(args.images, None)]
    written = []
    for images_dir, names in jobs:
        written += draw_pages(args.ground_truth, args.predictions, images_dir, args.out, names)
    wanted = sum(len(names) for names in groups.values()) if groups else None
    print(f"wrote {len(written)} pictures to {args.out}")
    return 0 if wanted is None or len(written) == wanted else 1


if __name__ == "__main__":
    sys.exit(main())
