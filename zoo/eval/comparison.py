"""Evaluation runs side by side: the table, the published reference rows, the plots, and a
warning for each setting in which the runs' provenance differs.

``python -m zoo.compare`` (:mod:`zoo.compare`) calls :func:`compare`. Columns, directions and
number formats come from the metric table (:data:`zoo.eval.omnidocbench.metrics.METRICS`).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from zoo.eval.omnidocbench import METRIC_BY_KEY, METRICS, PAGE_TYPES  # noqa: E402
from zoo.eval.omnidocbench.metrics import column_header, format_cell  # noqa: E402
from zoo.eval.provenance import flatten, provenance_differences  # noqa: E402
from zoo.eval.report import ALL_PAGES, report_run, write_report  # noqa: E402

log = logging.getLogger(__name__)

# OmniDocBench v1.5 figures of the two released systems as published in the DeepSeek-OCR 2
# paper (arXiv 2601.20552, "DeepSeek-OCR 2: Visual Causal Flow", Table 1; v1 in Gundam mode,
# up to 1156 visual tokens, v2 up to 1120), as recorded in the project's design notes
# (shared/design.md). The v2 Overall 91.09, its +3.73 over v1 (so 87.36) and the reading-order
# edit 0.085 -> 0.057 are also stated by the DeepSeek-OCR 2 release (README / model card and
# its press coverage); each Overall equals ((1 - text_edit) * 100 + formula_cdm + table_teds) / 3
# to 0.01. Their TEDS-structure, formula/table edit distances and per-page-type figures were
# not found in a readable source, so they are left out rather than guessed. Their Overall
# includes formula CDM; a run scored here without CDM has a two-part Overall.
REFERENCE_RUNS = {
    "DeepSeek-OCR (paper)": {
        "overall": 87.36,
        "text_edit": 0.073,
        "formula_cdm": 84.14,
        "table_teds": 85.25,
        "reading_order_edit": 0.085,
    },
    "DeepSeek-OCR 2 (paper)": {
        "overall": 91.09,
        "text_edit": 0.048,
        "formula_cdm": 90.31,
        "table_teds": 87.75,
        "reading_order_edit": 0.057,
    },
}


@dataclass
class Run:
    """One evaluated run: its name, the metrics over all pages and per page type."""

    name: str
    metrics: dict
    per_page_type: dict = field(default_factory=dict)
    reference: bool = False

    def scope(self, scope: str) -> dict | None:
        """The metrics of ``scope`` (``all`` or a page type); None when the run has none."""
        return self.metrics if scope == ALL_PAGES else self.per_page_type.get(scope)


def _is_evaluation(path: Path) -> bool:
    try:
        return "per_page_type" in json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False


def find_runs(paths: Sequence[Path | str]) -> list[Path]:
    """The evaluation run directories given or found (recursively) below the given folders."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise NotADirectoryError(f"{path}: expected a run directory or a folder of runs")
        candidates = [path / "metrics.json"] if (path / "metrics.json").is_file() else []
        candidates = candidates or sorted(path.rglob("metrics.json"))
        runs = [c.parent for c in candidates if _is_evaluation(c)]
        if not runs:
            raise FileNotFoundError(
                f"{path}: no evaluation metrics.json (written by python -m zoo.evaluate) in it "
                "or below it"
            )
        found += [run for run in runs if run not in found]
    return found


def _run_name(run_dir: Path) -> str:
    """The Hydra overrides the run was started with, else the directory name."""
    overrides = run_dir / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        lines = [line.strip()[2:] for line in overrides.read_text().splitlines()]
        chosen = [line for line in lines if line and not line.startswith(("out_dir", "hydra"))]
        if chosen:
            return " ".join(chosen)
    return run_dir.name


def load_runs(run_dirs: Sequence[Path]) -> list[Run]:
    """The runs' metrics, named by their overrides (or folder; made unique by the path)."""
    names = [_run_name(run_dir) for run_dir in run_dirs]
    runs = []
    for run_dir, name in zip(run_dirs, names, strict=True):
        if names.count(name) > 1:
            name = str(run_dir)
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        runs.append(Run(name, metrics, metrics.get("per_page_type", {})))
    return runs


def reference_runs() -> list[Run]:
    return [Run(name, dict(figures), reference=True) for name, figures in REFERENCE_RUNS.items()]


def comparison_rows(runs: Sequence[Run]) -> list[dict]:
    """One row per scope (all pages, then each page type) and run that has pages in it; None
    where a run has no figure."""
    rows = []
    for scope in (ALL_PAGES, *PAGE_TYPES):
        for run in runs:
            metrics = run.scope(scope)
            if metrics is None or metrics.get("n_pages") == 0:
                continue
            rows.append(
                {
                    "scope": scope,
                    "run": run.name,
                    "pages": metrics.get("n_pages"),
                    **{metric.key: metrics.get(metric.key) for metric in METRICS},
                }
            )
    return rows


def markdown_table(rows: Sequence[dict]) -> str:
    """The rows as a GitHub markdown table."""
    columns = list(rows[0])
    lines = [
        "| " + " | ".join(column_header(c) for c in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(format_cell(c, row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(rows: Sequence[dict], path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_metric(runs: Sequence[Run], key: str, path: Path) -> Path | None:
    """A horizontal bar per run that has ``key`` over all pages (references hatched)."""
    shown = [run for run in runs if run.metrics.get(key) is not None]
    if not shown:
        return None
    figure, axes = plt.subplots(figsize=(7, 0.5 * len(shown) + 1.5))
    bars = axes.barh(
        [run.name for run in shown],
        [run.metrics[key] for run in shown],
        color=["#bbbbbb" if run.reference else "#268bd2" for run in shown],
    )
    for bar, run in zip(bars, shown, strict=True):
        if run.reference:
            bar.set_hatch("//")
    metric = METRIC_BY_KEY[key]
    axes.bar_label(bars, fmt=f"%.{metric.digits}f", padding=2)
    axes.invert_yaxis()
    axes.set_xlabel(metric.header + ("" if metric.higher_is_better else " (lower is better)"))
    axes.set_title(f"OmniDocBench v1.5: {key}")
    axes.margins(x=0.15)
    return _save(figure, path)


def plot_reading_order_by_page_type(runs: Sequence[Run], path: Path) -> Path | None:
    """Grouped bars: reading-order edit distance of each run on each page type."""
    measured = [run for run in runs if run.per_page_type]
    if not measured:
        return None
    width = 0.8 / len(measured)
    figure, axes = plt.subplots(figsize=(10, 4.5))
    for index, run in enumerate(measured):
        values = [(run.per_page_type.get(t) or {}).get("reading_order_edit") for t in PAGE_TYPES]
        axes.bar(
            [k + index * width - 0.4 + width / 2 for k in range(len(PAGE_TYPES))],
            [float("nan") if v is None else v for v in values],
            width,
            label=run.name,
        )
    axes.set_xticks(range(len(PAGE_TYPES)), PAGE_TYPES, rotation=30, ha="right")
    axes.set_ylabel("reading-order edit distance ↓")
    axes.set_title("Reading-order edit distance per page type")
    axes.legend(fontsize="small")
    return _save(figure, path)


def _provenance_cell(value) -> str:
    """A provenance value on one markdown table line (JSON, pipes escaped)."""
    return json.dumps(value, ensure_ascii=False).replace("|", "\\|")


def provenance_section(runs: Sequence[Run], warnings: Sequence[str]) -> str:
    """The warnings, then what each measured run scored and how, one row per field."""
    flat = {run.name: flatten(run.metrics.get("provenance") or {}) for run in runs}
    fields = dict.fromkeys(field for fields in flat.values() for field in fields)
    rows = [
        {
            "field": field,
            **{
                name: _provenance_cell(flat[name][field]) if field in flat[name] else ""
                for name in flat
            },
        }
        for field in fields
    ]
    lines = ["## Provenance", "", *(f"> warning: {warning}" for warning in warnings)]
    lines += ["", markdown_table(rows) if rows else "(no provenance recorded)"]
    return "\n".join(lines)


def compare(
    paths: Sequence[Path | str],
    out_dir: Path | str,
    html: bool = False,
    images: Path | str | None = None,
    max_pages: int | None = None,
) -> dict[str, Path]:
    """Write the table (markdown + CSV) and plots of the runs in ``paths``; returns the files.

    Runs that differ in a setting of their provenance get one warning per field, logged and
    written in ``comparison.md`` above the provenance of every run. ``html`` also writes
    ``report.html`` (:mod:`zoo.eval.report`) with a gallery of the ``max_pages`` pages the runs
    disagree on most (all when None), drawn from the page images in ``images`` (default: where
    the first run's provenance says).
    """
    run_dirs = find_runs(paths)
    runs = load_runs(run_dirs) + reference_runs()
    out_dir = Path(out_dir)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    rows = comparison_rows(runs)
    table = markdown_table(rows)
    note = (
        "Reference rows: DeepSeek-OCR 2 paper (arXiv 2601.20552), Table 1. Their overall "
        "includes formula CDM; runs scored without CDM average text and table only."
    )
    measured = [run for run in runs if not run.reference]
    warnings = provenance_differences(
        {run.name: run.metrics.get("provenance") or {} for run in measured}
    )
    for warning in warnings:
        log.warning("%s", warning)
    files = {"markdown": out_dir / "comparison.md", "csv": out_dir / "comparison.csv"}
    files["markdown"].write_text(
        f"{table}\n\n{note}\n\n{provenance_section(measured, warnings)}\n", encoding="utf-8"
    )
    write_csv(rows, files["csv"])
    for key in METRIC_BY_KEY:
        plot = plot_metric(runs, key, out_dir / "plots" / f"{key}.png")
        if plot is not None:
            files[f"plot_{key}"] = plot
    plot = plot_reading_order_by_page_type(
        runs, out_dir / "plots" / "reading_order_by_page_type.png"
    )
    if plot is not None:
        files["plot_reading_order_by_page_type"] = plot
    if html:
        sources = [
            report_run(run.name, run_dir, run.metrics, None if images is None else Path(images))
            for run, run_dir in zip(measured, run_dirs, strict=True)
        ]
        plots = [path for name, path in files.items() if name.startswith("plot_")]
        references = [run.name for run in runs if run.reference]
        files["html"] = write_report(
            sources, rows, references, note, plots, warnings, out_dir / "report.html", max_pages
        )
    print(table)
    print(f"\n{note}\nwritten to {out_dir}")
    return files
