"""From matched pages to the OmniDocBench v1.5 metrics, as the official evaluator aggregates them.

Edit distances are page-level: on each page the edits of all its pairs are summed and divided
by the summed lengths (the longer side of each pair), then pages are averaged. Table TEDS is the
mean over every matched table of the run (the official evaluator's ``all`` entry); the
``*_page_avg`` variants average per page first. Pages without any pair of a kind do not count
for that kind. How each metric is aggregated is its row in
:data:`zoo.eval.omnidocbench.metrics.METRICS`. TEDS and Overall are on a 0-100 scale, edit
distances on 0-1.
"""

from __future__ import annotations

from statistics import fmean

from zoo.eval.omnidocbench.distance import edit_distance
from zoo.eval.omnidocbench.ground_truth import PAGE_TYPES
from zoo.eval.omnidocbench.markdown_blocks import FORMULA, INLINE_FORMULA
from zoo.eval.omnidocbench.matching import MatchedPair, TablePair
from zoo.eval.omnidocbench.metrics import METRICS, PAGE_METRICS, PAGES, TABLES, Metric
from zoo.eval.omnidocbench.normalize import clean_text, latex_to_unicode, normalize_table_html
from zoo.eval.omnidocbench.pages import PageMatches
from zoo.eval.omnidocbench.teds import teds

CDM_NOTE = (
    "formula CDM needs a LaTeX rendering stack and is not computed; overall is the mean of "
    "(1 - text_edit) * 100 and table_teds instead of the three-way v1.5 Overall"
)


def _edit_counts(gt, pred) -> tuple[int, int] | None:
    """(edits, longer length) of one pair; None when both sides are empty."""
    longest = max(len(gt), len(pred))
    return (edit_distance(pred, gt), longest) if longest else None


def _pair_counts(pair: MatchedPair) -> tuple[int, int] | None:
    # As the official evaluator, an empty normalised side falls back to the raw text.
    return _edit_counts(pair.norm_gt or pair.gt, pair.norm_pred or pair.pred)


def _page_edit(counts: list) -> float | None:
    counts = [c for c in counts if c is not None]
    longest = sum(length for _, length in counts)
    return sum(edits for edits, _ in counts) / longest if longest else None


def _formula_read_as_text(pair: MatchedPair) -> MatchedPair:
    """A ground-truth formula matched to predicted text is scored as text: the formula is
    rendered to unicode and cleaned like text."""
    try:
        gt = latex_to_unicode(pair.gt)
    except Exception:  # pylatexenc gives up on some malformed LaTeX: compare the source
        gt = pair.gt
    return MatchedPair(
        gt=gt,
        pred=pair.pred,
        norm_gt=clean_text(gt),
        norm_pred=pair.norm_pred,
        gt_category=pair.gt_category,
        pred_category=pair.pred_category,
    )


def _table_scores(pair: TablePair) -> dict:
    gt = normalize_table_html(pair.gt) or pair.gt
    pred = normalize_table_html(pair.pred) or pair.pred
    return {
        "teds": teds(pred, gt) * 100,
        "teds_structure": teds(pred, gt, structure_only=True) * 100,
        "edit": _edit_counts(gt, pred),
    }


def page_record(matches: PageMatches, text: list, formulas: list) -> dict:
    """The scores of one page (None for a kind the page has nothing of)."""
    tables = [_table_scores(pair) for pair in matches.tables]
    order = matches.reading_order
    return {
        "page": matches.page.name,
        "image": matches.page.image_name,
        "page_type": matches.page.page_type,
        "missing": matches.missing,
        "text_edit": _page_edit([_pair_counts(pair) for pair in text]),
        "formula_edit": _page_edit([_pair_counts(pair) for pair in formulas]),
        "table_teds": fmean(t["teds"] for t in tables) if tables else None,
        "table_teds_structure": fmean(t["teds_structure"] for t in tables) if tables else None,
        "table_edit": _page_edit([t["edit"] for t in tables]),
        "reading_order_edit": _page_edit([_edit_counts(*order)] if order else []),
        "n_text_blocks": len(text),
        "n_formulas": len(formulas),
        "n_tables": len(tables),
        "repetition_loop": matches.repetition_loop,
        "match_bounded": matches.match_bounded,
    }


def page_records(pages: list[PageMatches]) -> list[dict]:
    """Per-page scores of every page.

    As the official evaluator, a formula matched to predicted text (or table cells) moves to
    the text score, but only when some page of the run has text pairs at all.
    """
    any_text = any(page.text for page in pages)
    records = []
    for page in pages:
        formulas, text = [], list(page.text)
        for pair in page.formulas:
            if pair.pred_category in (INLINE_FORMULA, FORMULA, ""):
                formulas.append(pair)
            elif any_text:
                text.append(_formula_read_as_text(pair))
        records.append(page_record(page, text, formulas))
    return records


def aggregate(records: list[dict], metric: Metric) -> float | None:
    """``metric`` over ``records``: the mean of the page values, or (over matched tables) the
    mean of the page means weighted by the page's table count, which is the mean over all
    tables. None when no page has a value."""
    scored = [record for record in records if record[metric.page_value] is not None]
    if metric.aggregate == PAGES:
        return fmean(record[metric.page_value] for record in scored) if scored else None
    if metric.aggregate == TABLES:
        n_tables = sum(record["n_tables"] for record in scored)
        total = sum(record[metric.page_value] * record["n_tables"] for record in scored)
        return total / n_tables if n_tables else None
    raise ValueError(f"metric {metric.key!r}: no per-page aggregate {metric.aggregate!r}")


def summarize(records: list[dict]) -> dict:
    """Metrics over pages, per page type, and Overall.

    Overall = ((1 - text_edit) * 100 + table_teds + formula CDM) / 3 in v1.5; CDM is not
    computed here, so Overall is the mean of the other two and ``overall_note`` says so.
    """
    metrics: dict = {metric.key: None for metric in METRICS}
    metrics.update({metric.key: aggregate(records, metric) for metric in PAGE_METRICS})
    parts = [metrics["table_teds"]]
    if metrics["text_edit"] is not None:
        parts.append((1 - metrics["text_edit"]) * 100)
    parts = [part for part in parts if part is not None]
    metrics["overall"] = fmean(parts) if parts else None
    metrics["overall_note"] = CDM_NOTE
    metrics["per_page_type"] = {}
    for page_type in PAGE_TYPES:
        typed = [record for record in records if record["page_type"] == page_type]
        breakdown = {metric.key: aggregate(typed, metric) for metric in PAGE_METRICS}
        metrics["per_page_type"][page_type] = {**breakdown, "n_pages": len(typed)}
    metrics["n_pages"] = len(records)
    metrics["n_missing"] = sum(record["missing"] for record in records)
    metrics["n_repetition_loops"] = sum(record["repetition_loop"] for record in records)
    metrics["pages"] = records
    return metrics
