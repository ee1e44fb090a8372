"""Score a folder of per-page markdown predictions on OmniDocBench v1.5 (any model's output).

``score_predictions`` returns the metrics dict, ``write_metrics`` stores it as metrics.json,
``format_table`` renders it for the terminal. ``python -m zoo.evaluate predictions=DIR
ground_truth=FILE.json`` calls these.
"""

from __future__ import annotations

import json
from pathlib import Path

from zoo.eval.omnidocbench import (
    METRIC_KEYS,
    PAGE_TYPES,
    load_ground_truth,
    match_page,
    page_records,
    select_pages,
    summarize,
)

_LABELS = {
    "text_edit": "Text edit ↓",
    "formula_edit": "Formula edit ↓",
    "table_teds": "Table TEDS ↑",
    "table_teds_structure": "Table TEDS-S ↑",
    "table_edit": "Table edit ↓",
    "reading_order_edit": "Reading-order edit ↓",
    "overall": "Overall ↑",
}


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

    A page without a prediction file is scored as an empty page and counted in ``n_missing``.
    Returns the metrics dict: ``text_edit``, ``formula_edit``, ``table_teds``,
    ``table_teds_structure``, ``table_edit``, ``reading_order_edit``, ``overall``
    (+ ``overall_note``, ``formula_cdm``), ``per_page_type``, ``n_pages``, ``n_missing`` and
    ``pages`` (one record per page).
    """
    predictions_dir = Path(predictions_dir)
    if not predictions_dir.is_dir():
        raise NotADirectoryError(f"predictions={predictions_dir}: expected a folder of .md files")
    pages = select_pages(load_ground_truth(ground_truth), page_filter)
    matched = []
    for page in pages:
        path = find_prediction(predictions_dir, page.image_name)
        markdown = "" if path is None else path.read_text(encoding="utf-8", errors="replace")
        matched.append(match_page(page, markdown, missing=path is None))
    return summarize(page_records(matched))


def write_metrics(metrics: dict, out_dir: Path) -> Path:
    """Write ``metrics.json`` into ``out_dir`` (created if needed); returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _cell(value: float | None, key: str) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if "teds" in key or key == "overall" else f"{value:.3f}"


def format_table(metrics: dict) -> str:
    """The headline metrics, then one row per page type, as aligned plain text."""
    lines = [f"OmniDocBench v1.5: {metrics['n_pages']} pages, {metrics['n_missing']} missing"]
    width = max(len(label) for label in _LABELS.values())
    for key, label in _LABELS.items():
        lines.append(f"  {label:<{width}}  {_cell(metrics[key], key)}")
    if metrics.get("overall_note"):
        lines.append(f"  note: {metrics['overall_note']}")
    columns = ["page type", "pages", *(_LABELS[key].rstrip(" ↑↓") for key in METRIC_KEYS)]
    rows = [
        [
            page_type,
            str(metrics["per_page_type"][page_type]["n_pages"]),
            *(_cell(metrics["per_page_type"][page_type][key], key) for key in METRIC_KEYS),
        ]
        for page_type in PAGE_TYPES
    ]
    widths = [max(len(row[i]) for row in [columns, *rows]) for i in range(len(columns))]
    lines.append("")
    for row in [columns, *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    return "\n".join(lines)
