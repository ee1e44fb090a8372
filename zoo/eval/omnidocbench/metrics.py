"""The table of OmniDocBench metrics: one row per metric, read by every place that shows one.

Scoring (:func:`zoo.eval.omnidocbench.scores.summarize`) aggregates each row's per-page value as
its ``aggregate`` says; ``metrics.json``, ``pages.csv``, the printed table, ``zoo.compare`` and
its plots take their keys, labels, directions and number formats from here, so a new metric is
one row (plus the per-page value that ``page_record`` computes for it).
"""

from __future__ import annotations

from dataclasses import dataclass

PAGES = "mean over pages"  # the mean of the pages' values (pages without one do not count)
TABLES = "mean over matched tables"  # the mean over every matched table of the run
DERIVED = "derived"  # computed from other metrics
NOT_COMPUTED = "not computed"  # reported as None, kept so that reference figures have a column


@dataclass(frozen=True)
class Metric:
    """One metric: its key, what a person reads, which way is better, digits and aggregate.

    ``page_value`` is the per-page field it aggregates (a ``pages.csv`` column), None for a
    metric with no per-page value; metrics with one also get a figure per page type.
    """

    key: str
    label: str
    higher_is_better: bool
    digits: int
    aggregate: str
    page_value: str | None = None

    @property
    def arrow(self) -> str:
        """Which way is better: ``↑`` or ``↓``."""
        return "↑" if self.higher_is_better else "↓"

    @property
    def header(self) -> str:
        """The label with its direction, e.g. ``Text edit ↓``."""
        return f"{self.label} {self.arrow}"

    def format(self, value: float | None) -> str:
        """The value with the metric's digits; ``-`` when there is none."""
        return "-" if value is None else f"{value:.{self.digits}f}"


# Edit distances are on 0-1, TEDS, CDM and Overall on 0-100 (as the official tables print them).
METRICS: tuple[Metric, ...] = (
    Metric("overall", "Overall", True, 2, DERIVED),
    Metric("text_edit", "Text edit", False, 3, PAGES, "text_edit"),
    Metric("formula_cdm", "Formula CDM", True, 2, NOT_COMPUTED),
    Metric("formula_edit", "Formula edit", False, 3, PAGES, "formula_edit"),
    Metric("table_teds", "Table TEDS", True, 2, TABLES, "table_teds"),
    Metric("table_teds_structure", "Table TEDS-S", True, 2, TABLES, "table_teds_structure"),
    # The same per-table scores averaged per page first, then over pages: the figure the
    # official result-table notebook reads (``result["table"]["page"]["TEDS"]["ALL"]``).
    Metric("table_teds_page_avg", "Table TEDS, page avg", True, 2, PAGES, "table_teds"),
    Metric(
        "table_teds_structure_page_avg",
        "Table TEDS-S, page avg",
        True,
        2,
        PAGES,
        "table_teds_structure",
    ),  # fmt: skip
    Metric("table_edit", "Table edit", False, 3, PAGES, "table_edit"),
    Metric("reading_order_edit", "Reading-order edit", False, 3, PAGES, "reading_order_edit"),
    # The share of pages whose output ran into the token limit or ends in a repetition loop.
    Metric("repetition_loop_rate", "Repetition loops", False, 3, PAGES, "repetition_loop"),
)
METRIC_BY_KEY = {metric.key: metric for metric in METRICS}


def format_cell(key: str, value) -> str:
    """A table cell of column ``key``: a metric with its digits, ``-`` for none, else as is."""
    if value is None:
        return "-"
    return METRIC_BY_KEY[key].format(value) if key in METRIC_BY_KEY else str(value)


def column_header(key: str) -> str:
    """A column's key with the metric's direction (``text_edit ↓``); other columns as they are."""
    metric = METRIC_BY_KEY.get(key)
    return key if metric is None else f"{key} {metric.arrow}"


# The metrics computed from per-page values: each also has a figure per page type.
PAGE_METRICS = tuple(metric for metric in METRICS if metric.page_value is not None)
# The per-page values, in table order, without repeats: the score columns of ``pages.csv``.
PAGE_VALUES = tuple(dict.fromkeys(metric.page_value for metric in PAGE_METRICS))
