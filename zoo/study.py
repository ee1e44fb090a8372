"""``python -m zoo.study reading_order``: train and evaluate a grid of systems over several seeds
on one held-out page set, then compare them with confidence intervals and paired tests.

The reading-order grid (:data:`zoo.studies.grid.READING_ORDER`) trains v1 (``deepencoder``),
v2 (``causal_flow``) and five v2 ablations with ``experiment=study_glyph_blocks``, evaluates
each with ``zoo.evaluate`` on the experiment's held-out pages, and evaluates two inference-time
interventions on the trained v2 weights. Runs go ``--jobs`` at a time with ``--threads`` each.
Each finished run leaves a record in ``--results`` (default ``docs/study/reading_order``); a
recorded run is skipped, so the command resumes, and ``--report-only`` rebuilds ``table.md``,
``summary.json`` and the plots from the records alone.

Examples::

    python -m zoo.study reading_order
    python -m zoo.study reading_order --systems causal_flow deepencoder --seeds 0
    python -m zoo.study reading_order --report-only
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning (see zoo/train.py); before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from zoo.studies.grid import STUDIES  # noqa: E402
from zoo.studies.report import build_report  # noqa: E402
from zoo.studies.runner import StudyRunner, StudySettings, write_heldout  # noqa: E402

log = logging.getLogger("zoo.study")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.study", description="Run a study grid and compare its systems."
    )
    parser.add_argument("study", choices=sorted(STUDIES), help="which study")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (0 1 2)")
    parser.add_argument("--systems", nargs="+", help="a subset of the grid (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="threads per run (default 1)")
    parser.add_argument(
        "--results", type=Path, help="run records, table and plots (default docs/study/<study>)"
    )
    parser.add_argument(
        "--work", type=Path, help="checkpoints and predictions (default runs/study/<study>)"
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=160, help="evaluation generation length (160)"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="only rebuild the table and plots"
    )
    parser.add_argument(
        "overrides", nargs="*", help="zoo.train overrides for every run, e.g. trainer.max_steps=20"
    )
    args = parser.parse_intermixed_args(argv)  # overrides may follow the options
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s")
    if args.jobs < 1 or args.threads < 1:
        parser.error(f"--jobs and --threads must be >= 1, got {args.jobs} and {args.threads}")
    try:
        grid = STUDIES[args.study].select(args.systems)
    except ValueError as error:
        parser.error(str(error))
    results = args.results or Path("docs") / "study" / args.study
    work = args.work or Path("runs") / "study" / args.study
    if not args.report_only:
        settings = StudySettings(
            seeds=tuple(args.seeds),
            jobs=args.jobs,
            threads=args.threads,
            train_overrides=tuple(args.overrides),
            max_new_tokens=args.max_new_tokens,
        )
        started = time.monotonic()
        heldout = write_heldout(grid, settings, work.resolve(), results)
        StudyRunner(grid, settings, work.resolve(), results, heldout).run()
        log.info("grid done in %.1f min", (time.monotonic() - started) / 60)
    build_report(grid, results)
    print((results / "table.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
