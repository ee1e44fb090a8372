"""The evaluation report: one self-contained ``report.html`` to browse runs page by page.

It holds the comparison table, the provenance of each run (differing settings flagged and
warned about), the plots, and a gallery of pages: the page with the ground-truth reading order
and one predicted reading order per run as numbered arrows, the page's scores per run, and a
word-level diff of each matched block's ground-truth and predicted text. The gallery is
filterable by page type and sorted by :func:`disagreement`, so the pages to look at come first.
Everything is inlined (images as ``data:`` URIs, CSS and a few lines of script), so the file
can be mailed or archived and nothing is fetched when it is opened.

``python -m zoo.compare RUN... --html`` and ``python -m zoo.evaluate ... report=true`` write it
(through :func:`zoo.eval.comparison.compare`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path
from string import Template

from PIL import Image

from zoo.data.page_datasets import UNREADABLE_IMAGE_ERRORS, open_page
from zoo.eval.omnidocbench import (
    PAGE_METRICS,
    PAGE_VALUES,
    GroundTruthPage,
    PageMatches,
    load_ground_truth,
    match_page,
    normalized_edit_distance,
)
from zoo.eval.omnidocbench.metrics import column_header, format_cell
from zoo.eval.predictions import find_prediction
from zoo.eval.provenance import flatten
from zoo.eval.reading_order_pictures import (
    ground_truth_panel,
    matched_reading_orders,
    predicted_panel,
)

log = logging.getLogger(__name__)

# The per-page values whose spread across runs measures how much the runs disagree on a page.
DISAGREEMENT_VALUES = ("text_edit", "reading_order_edit")
PANEL_SIDE = 900  # pixels on the longer side of a page picture, before JPEG compression
JPEG_QUALITY = 60
DIFF_CHARS = 4000  # each side of a block diff is cut here: a runaway prediction stays readable
UNKNOWN_TYPE = "unknown"
ALL_PAGES = "all"  # the scope of the comparison rows over all pages
# Latin words whole (so a diff marks words), every other character alone (CJK, punctuation).
_TOKEN = re.compile(r"\w+|\s+|.", re.ASCII)


@dataclass
class ReportRun:
    """A measured run as the report needs it: its name, metrics and where its pages are."""

    name: str
    metrics: dict
    predictions: Path
    images: Path

    @property
    def page_records(self) -> dict[str, dict]:
        return {record["page"]: record for record in self.metrics.get("pages", [])}


def report_run(name: str, run_dir: Path, metrics: dict, images: Path | None = None) -> ReportRun:
    """Where a run's predictions and page images are: as recorded in its provenance, else its
    ``predictions/`` folder and the ``images/`` folder next to the ground truth."""
    provenance = metrics.get("provenance") or {}
    predictions = Path(provenance.get("predictions") or run_dir / "predictions")
    if not predictions.is_dir():
        raise FileNotFoundError(
            f"run {name} ({run_dir}): its predictions folder {predictions} is absent; the report "
            "shows each page's predictions, so score them again with python -m zoo.evaluate"
        )
    if images is None:
        recorded = provenance.get("images")
        images = Path(recorded) if recorded else Path(provenance["ground_truth"]).parent / "images"
    return ReportRun(name, metrics, predictions, Path(images))


def disagreement(records: Sequence[dict | None]) -> float:
    """How much the runs disagree on a page: the largest spread (max - min across runs) of its
    text and reading-order edit distances. With one run, its larger edit distance (its error).
    ``records`` are the runs' ``pages.csv`` rows of the page (None: not scored by that run);
    a value no two runs have counts 0."""
    scored = [record for record in records if record is not None]
    measures = []
    for key in DISAGREEMENT_VALUES:
        values = [record[key] for record in scored if record.get(key) is not None]
        if len(records) == 1 and values:
            measures.append(values[0])
        elif len(values) >= 2:
            measures.append(max(values) - min(values))
    return max(measures, default=0.0)


def _cut(text: str) -> str:
    return text if len(text) <= DIFF_CHARS else f"{text[:DIFF_CHARS]} [... {len(text)} chars]"


def diff_html(gt: str, pred: str) -> str:
    """The ground truth turned into the prediction, as HTML: ``<del>`` for what the prediction
    lacks, ``<ins>`` for what it adds (words, or single characters outside Latin script)."""
    a, b = _TOKEN.findall(_cut(gt)), _TOKEN.findall(_cut(pred))
    parts = []
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            parts.append(html.escape("".join(a[i1:i2])))
            continue
        if i2 > i1:
            parts.append(f"<del>{html.escape(''.join(a[i1:i2]))}</del>")
        if j2 > j1:
            parts.append(f"<ins>{html.escape(''.join(b[j1:j2]))}</ins>")
    return "".join(parts)


def block_diffs(matches: PageMatches) -> list[dict]:
    """Each scored block of a matched page: its ground-truth order numbers, category, edit
    distance and diff; text and formulas in ground-truth reading order, then tables."""
    pairs = sorted(
        matches.text + matches.formulas,
        key=lambda pair: min((o for o in pair.gt_orders if o is not None), default=float("inf")),
    )
    rows = [
        {
            "order": ", ".join(str(o) for o in pair.gt_orders if o is not None),
            "category": pair.gt_category if pair.gt else "extra prediction",
            "distance": normalized_edit_distance(
                pair.norm_gt or pair.gt, pair.norm_pred or pair.pred
            ),
            "diff": diff_html(pair.gt, pair.pred),
        }
        for pair in pairs
    ]
    rows += [
        {
            "order": "",
            "category": "table",
            "distance": normalized_edit_distance(table.gt, table.pred),
            "diff": diff_html(table.gt, table.pred),
        }
        for table in matches.tables
    ]
    return rows


def image_data_uri(image: Image.Image, max_side: int = PANEL_SIDE) -> str:
    """The image downscaled to ``max_side`` as an inline JPEG."""
    image = image.convert("RGB")
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def file_data_uri(path: Path, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _value_cell(key: str, value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    metric = next(metric for metric in PAGE_METRICS if metric.page_value == key)
    return metric.format(value)


def _page_scores(runs: Sequence[ReportRun], records: Sequence[dict | None]) -> str:
    head = "".join(f"<th>{html.escape(key)}</th>" for key in PAGE_VALUES)
    rows = []
    for run, record in zip(runs, records, strict=True):
        cells = (
            "".join(f"<td>{_value_cell(key, record.get(key))}</td>" for key in PAGE_VALUES)
            if record
            else f'<td colspan="{len(PAGE_VALUES)}">not scored</td>'
        )
        rows.append(f"<tr><th>{html.escape(run.name)}</th>{cells}</tr>")
    return f'<table class="scores"><tr><th>run</th>{head}</tr>{"".join(rows)}</table>'


def _figure(uri: str, caption: str) -> str:
    caption = html.escape(caption)
    return f'<figure><img src="{uri}" alt="{caption}"><figcaption>{caption}</figcaption></figure>'


def _diff_table(run: ReportRun, rows: list[dict], opened: bool) -> str:
    body = "".join(
        f"<tr><td>{row['order']}</td><td>{html.escape(row['category'])}</td>"
        f'<td>{row["distance"]:.3f}</td><td class="diff">{row["diff"]}</td></tr>'
        for row in rows
    )
    return (
        f"<details{' open' if opened else ''}>"
        f"<summary>block diffs: {html.escape(run.name)} ({len(rows)} blocks)</summary>"
        '<table class="diffs"><tr><th>order</th><th>category</th><th>edit</th>'
        f"<th>ground truth &rarr; prediction</th></tr>{body}</table></details>"
    )


def page_card(
    page: GroundTruthPage, runs: Sequence[ReportRun], score: float, opened: bool = False
) -> str:
    """One gallery card: the reading-order pictures (ground truth, then one per run), the
    page's scores per run and the block diffs of each run (unfolded when ``opened``)."""
    records = [run.page_records.get(page.name) for run in runs]
    matched = []
    for run in runs:
        path = find_prediction(run.predictions, page.image_name)
        markdown = "" if path is None else path.read_text(encoding="utf-8", errors="replace")
        matched.append(match_page(page, markdown, missing=path is None))
    try:
        image = open_page(runs[0].images / page.image_name)
    except UNREADABLE_IMAGE_ERRORS as error:
        log.warning("report: no picture of %s: %s", page.name, error)
        figures = f'<p class="warning">page image unreadable: {html.escape(str(error))}</p>'
    else:
        orders = [matched_reading_orders(matches) for matches in matched]
        pictures = [("ground truth", ground_truth_panel(image, orders[0]))]
        pictures += [
            (run.name, predicted_panel(image, order, "predicted"))
            for run, order in zip(runs, orders, strict=True)
        ]
        figures = "".join(_figure(image_data_uri(picture), name) for name, picture in pictures)
    page_type = page.page_type or UNKNOWN_TYPE
    diffs = "".join(
        _diff_table(run, block_diffs(m), opened) for run, m in zip(runs, matched, strict=True)
    )
    return (
        f'<article class="page-card" data-page="{html.escape(page.name)}" '
        f'data-page-type="{html.escape(page_type)}" data-disagreement="{score:.4f}">'
        f'<h3>{html.escape(page.name)} <span class="tag">{html.escape(page_type)}</span> '
        f'<span class="muted">disagreement {score:.3f}</span></h3>'
        f'{_page_scores(runs, records)}<div class="panels">{figures}</div>{diffs}</article>'
    )


def gallery_pages(runs: Sequence[ReportRun]) -> list[tuple[GroundTruthPage, float]]:
    """The pages any run scored with their :func:`disagreement`, most disagreed-on first."""
    ground_truths: dict[str, list[GroundTruthPage]] = {}
    pages: dict[str, GroundTruthPage] = {}
    for run in runs:
        path = run.metrics["provenance"]["ground_truth"]
        if path not in ground_truths:
            ground_truths[path] = load_ground_truth(path)
        scored = run.page_records
        for page in ground_truths[path]:
            if page.name in scored:
                pages.setdefault(page.name, page)
    scores = {name: disagreement([run.page_records.get(name) for run in runs]) for name in pages}
    order = sorted(pages, key=lambda name: (-scores[name], name))
    return [(pages[name], scores[name]) for name in order]


def metrics_table(rows: Sequence[dict], references: Sequence[str], table_id: str) -> str:
    """Rows of :func:`zoo.eval.comparison.comparison_rows` as an HTML table; each row names its
    run and scope (``data-run``, ``data-scope``), reference rows are marked."""
    columns = list(rows[0]) if rows else []
    head = "".join(f"<th>{html.escape(column_header(column))}</th>" for column in columns)
    body = []
    for row in rows:
        marked = ' class="reference"' if row["run"] in references else ""
        cells = "".join(f"<td>{html.escape(format_cell(c, row[c]))}</td>" for c in columns)
        body.append(
            f'<tr data-run="{html.escape(row["run"])}" data-scope="{html.escape(row["scope"])}"'
            f"{marked}>{cells}</tr>"
        )
    return f'<table id="{table_id}"><tr>{head}</tr>{"".join(body)}</table>'


def provenance_table(runs: Sequence[ReportRun]) -> str:
    """One row per provenance field, one column per run; rows whose values differ marked."""
    flat = {run.name: flatten(run.metrics.get("provenance") or {}) for run in runs}
    fields = dict.fromkeys(field for fields in flat.values() for field in fields)
    head = "".join(f"<th>{html.escape(name)}</th>" for name in flat)
    rows = []
    for field in fields:
        values = [json.dumps(flat[name].get(field), ensure_ascii=False) for name in flat]
        differs = ' class="differs"' if len(set(values)) > 1 else ""
        cells = "".join(f"<td>{html.escape(value)}</td>" for value in values)
        rows.append(f'<tr data-field="{html.escape(field)}"{differs}><th>{field}</th>{cells}</tr>')
    return f'<table id="provenance"><tr><th>field</th>{head}</tr>{"".join(rows)}</table>'


_PAGE = Template(
    """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; vertical-align: top; }
#comparison td, .scores td { text-align: right; font-variant-numeric: tabular-nums; }
tr.reference { color: #777; font-style: italic; }
tr.differs { background: #fff3cd; }
.warning { color: #8a4b00; background: #fff3cd; padding: 4px 8px; margin: 2px 0; }
.plots { display: grid; grid-template-columns: repeat(3, 1fr); gap: 4px; align-items: start; }
.plots img { width: 100%; border: 1px solid #eee; }
.wide { overflow-x: auto; }
#comparison th, #by-type th { font-size: 12px; }
.page-card { border: 1px solid #bbb; border-radius: 6px; padding: 8px 12px; margin: 1em 0; }
.page-card[hidden] { display: none; }
.panels { display: flex; gap: 8px; overflow-x: auto; }
.panels figure { margin: 0; flex: 1 1 0; min-width: 260px; max-width: 520px; }
.panels img { width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 12px; color: #555; text-align: center; }
.tag { background: #e1ecf4; border-radius: 4px; padding: 0 6px; font-size: 12px; }
.muted { color: #777; font-size: 12px; font-weight: normal; }
td.diff { white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 12px; }
del { background: #ffd7d5; color: #82071e; }
ins { background: #d2f4d3; color: #055d20; text-decoration: none; }
</style></head><body>
<h1>$title</h1>
<h2>Metrics</h2>
<div class="wide">$table</div>
<p class="muted">$note</p>
<details><summary>per page type</summary><div class="wide">$by_type</div></details>
<h2>Provenance</h2>
$warnings
$provenance
<h2>Plots</h2>
<div class="plots">$plots</div>
<h2>Pages</h2>
<p>$n_pages pages, sorted by disagreement: $disagreement_note
<label>page type <select id="page-type-filter">$options</select></label></p>
<div id="gallery">$cards</div>
<script>
document.getElementById("page-type-filter").addEventListener("change", function (event) {
  var chosen = event.target.value;
  document.querySelectorAll(".page-card").forEach(function (card) {
    card.hidden = chosen !== "" && card.dataset.pageType !== chosen;
  });
});
</script>
</body></html>
"""
)


def _type_options(pages: Sequence[tuple[GroundTruthPage, float]]) -> str:
    counts: dict[str, int] = {}
    for page, _ in pages:
        counts[page.page_type or UNKNOWN_TYPE] = counts.get(page.page_type or UNKNOWN_TYPE, 0) + 1
    options = [f'<option value="">all ({len(pages)})</option>']
    options += [
        f'<option value="{html.escape(name)}">{html.escape(name)} ({count})</option>'
        for name, count in sorted(counts.items())
    ]
    return "".join(options)


def write_report(
    runs: Sequence[ReportRun],
    rows: Sequence[dict],
    references: Sequence[str],
    note: str,
    plots: Sequence[Path],
    warnings: Sequence[str],
    path: Path,
    max_pages: int | None = None,
) -> Path:
    """Write ``report.html``: the comparison ``rows`` (those of the ``references`` runs marked,
    ``note`` below them), the provenance with the ``warnings``, the ``plots`` and the gallery of
    the ``max_pages`` most disagreed-on pages (all when None)."""
    pages = gallery_pages(runs)[:max_pages]
    if len(runs) > 1:
        explained = "the largest spread across runs of the page's " + " and ".join(
            DISAGREEMENT_VALUES
        )
    else:
        explained = "the page's larger of " + " and ".join(DISAGREEMENT_VALUES)
    document = _PAGE.substitute(
        title="OmniDocBench evaluation report",
        table=metrics_table([r for r in rows if r["scope"] == ALL_PAGES], references, "comparison"),
        by_type=metrics_table([r for r in rows if r["scope"] != ALL_PAGES], references, "by-type"),
        note=html.escape(note),
        warnings="".join(f'<p class="warning">{html.escape(w)}</p>' for w in warnings),
        provenance=provenance_table(runs),
        plots="".join(
            f'<img src="{file_data_uri(plot)}" alt="{html.escape(plot.stem)}">' for plot in plots
        ),
        n_pages=len(pages),
        disagreement_note=html.escape(explained) + ".",
        options=_type_options(pages),
        # the first page, the one the runs disagree on most, shows its diffs unfolded
        cards="".join(
            page_card(page, runs, score, opened=index == 0)
            for index, (page, score) in enumerate(pages)
        ),
    )
    path = Path(path)
    path.write_text(document, encoding="utf-8")
    return path
