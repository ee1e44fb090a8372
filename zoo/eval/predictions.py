"""Score a folder of per-page markdown predictions on OmniDocBench v1.5 (any model's output).

``score_predictions`` returns the metrics dict, ``write_metrics`` stores it as metrics.json,
``format_table`` renders it for the terminal. ``python -m zoo.evaluate predictions=DIR
ground_truth=FILE.json`` calls these.
"""

from __future__ import annotations

import json
from pathlib import Path

from zoo.eval.omnidocbench import (
    METRICS,
    PAGE_METRICS,
    PAGE_TYPES,
    load_ground_truth,
    match_page,
    page_records,
    select_pages,
    summarize,
)
from zoo.eval.provenance import scoring_provenance
from zoo.eval.repetition import is_repetition_loop
from zoo.io.atomic import write_text_atomic


def find_prediction(predictions_dir: Path, image_name: str) -> Path | None:
    """The prediction file of a page image, under the names the official evaluator accepts:
    ``page.md``, then ``page.mmd`` and ``page.md`` without ``.pdf`` (nougat, marker), then
    ``page.jpg.md`` (MinerU)."""
    stem = Path(image_name).stem
    for name in (
        f"{stem}.md",
        f"{stem.replace('.pdf', '')}.mmd",
        f"{stem.replace('.pdf', '')}.md",
        f"{image_name}.md",
    ):
        path = predictions_dir / name
        if path.is_file():
            return path
    return None


def score_predictions(
    predictions_dir: Path, ground_truth: Path, page_filter: dict | None = None
) -> dict:
    """Score every ground-truth page (optionally only those whose page attributes match
    ``page_filter``, e.g. ``{"language": "english"}``) against its ``.md`` prediction.

    A page without a prediction file is scored as an empty page and counted in ``n_missing``;
    a page whose output ran into the token limit or ends in a loop is counted in
    ``n_repetition_loops`` (:mod:`zoo.eval.repetition`). Returns the metrics dict: one entry per
    row of :data:`~zoo.eval.omnidocbench.metrics.METRICS` (``overall``, ``text_edit``,
    ``table_teds``, ...; + ``overall_note``), ``per_page_type``, ``n_pages``, ``n_missing``,
    ``n_repetition_loops``, ``provenance`` (what was scored, how) and ``pages`` (one record per
    page).
    """
    predictions_dir = Path(predictions_dir)
    if not predictions_dir.is_dir():
        raise NotADirectoryError(f"predictions={predictions_dir}: expected a folder of .md files")
    all_pages = load_ground_truth(ground_truth)
    pages = select_pages(all_pages, page_filter)
    matched = []
    for page in pages:
        path = find_prediction(predictions_dir, page.image_name)
        markdown = "" if path is None else path.read_text(encoding="utf-8", errors="replace")
        matches = match_page(page, markdown, missing=path is None)
        matches.repetition_loop = path is not None and is_repetition_loop(path, markdown)
        matched.append(matches)
    metrics = summarize(page_records(matched))
    metrics["provenance"] = scoring_provenance(
        Path(ground_truth), predictions_dir, len(all_pages), page_filter
    )
    return metrics


def write_metrics(metrics: dict, out_dir: Path) -> Path:
    """Write ``metrics.json`` into ``out_dir`` (created if needed); returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "metrics.json"
    write_text_atomic(path, json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    return path


def format_table(metrics: dict) -> str:
    """The headline metrics, then one row per page type, as aligned plain text."""
    lines = [
        f"OmniDocBench v1.5: {metrics['n_pages']} pages, {metrics['n_missing']} missing, "
        f"{metrics['n_repetition_loops']} with a repetition loop"
    ]
    width = max(len(metric.header) for metric in METRICS)
    for metric in METRICS:
        lines.append(f"  {metric.header:<{width}}  {metric.format(metrics[metric.key])}")
    if metrics.get("overall_note"):
        lines.append(f"  note: {metrics['overall_note']}")
    columns = ["page type", "pages", *(metric.label for metric in PAGE_METRICS)]
    rows = [
        [
            page_type,
            str(metrics["per_page_type"][page_type]["n_pages"]),
            *(
                metric.format(metrics["per_page_type"][page_type][metric.key])
                for metric in PAGE_METRICS
            ),
        ]
        for page_type in PAGE_TYPES
    ]
    widths = [max(len(row[i]) for row in [columns, *rows]) for i in range(len(columns))]
    lines.append("")
    for row in [columns, *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    return "\n".join(lines)
