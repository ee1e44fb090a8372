"""``python -m zoo.compare RUN_DIR... [--out DIR]``: evaluation runs side by side.

Each argument is a ``zoo.evaluate`` run directory (it holds ``metrics.json``) or a folder
holding such runs, e.g. a Hydra multirun directory. Writes ``comparison.md`` and
``comparison.csv`` (one row per run and scope: all pages, then each page type, with the
published DeepSeek-OCR and DeepSeek-OCR 2 figures as reference rows; ``comparison.md`` also
lists each run's provenance and warns about every setting in which the runs differ) and PNG
plots: one bar chart per metric and the reading-order edit distance per page type. ``--html``
also writes ``report.html``, one self-contained page with the table, the provenance, the plots
and a gallery of the pages the runs disagree on most (:mod:`zoo.eval.report`). The work is
done by :mod:`zoo.eval.comparison`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from zoo.eval.comparison import compare


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.compare", description="Compare zoo.evaluate runs side by side."
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run directories or multirun folders")
    parser.add_argument("--out", type=Path, default=Path("comparison"), help="output folder")
    parser.add_argument("--html", action="store_true", help="also write report.html")
    parser.add_argument("--images", type=Path, help="page images (default: as each run records)")
    parser.add_argument(
        "--max-pages", type=int, default=100, help="pages in the report's gallery (default 100)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        compare(args.runs, args.out, args.html, args.images, args.max_pages)
    except (NotADirectoryError, FileNotFoundError) as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
