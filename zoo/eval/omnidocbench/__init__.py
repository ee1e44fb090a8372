"""OmniDocBench v1.5 end-to-end evaluation, reproducing the official evaluator's numbers.

Read the ground truth (:func:`load_ground_truth`), match each page's predicted markdown to it
(:func:`match_page`), then score (:func:`page_records`, :func:`summarize`).
:func:`zoo.eval.predictions.score_predictions` does all of it for a folder of ``.md`` files.
"""

from zoo.eval.omnidocbench.distance import edit_distance, normalized_edit_distance
from zoo.eval.omnidocbench.ground_truth import (
    PAGE_TYPES,
    GroundTruthError,
    GroundTruthPage,
    load_ground_truth,
    parse_ground_truth,
    select_pages,
)
from zoo.eval.omnidocbench.markdown_blocks import Block, split_markdown
from zoo.eval.omnidocbench.metrics import METRIC_BY_KEY, METRICS, PAGE_METRICS, PAGE_VALUES, Metric
from zoo.eval.omnidocbench.normalize import normalize_formula, normalize_table_html, normalize_text
from zoo.eval.omnidocbench.pages import PageMatches, match_page
from zoo.eval.omnidocbench.scores import page_records, summarize
from zoo.eval.omnidocbench.teds import teds

__all__ = [
    "METRICS",
    "METRIC_BY_KEY",
    "PAGE_METRICS",
    "PAGE_VALUES",
    "PAGE_TYPES",
    "Block",
    "GroundTruthError",
    "GroundTruthPage",
    "Metric",
    "PageMatches",
    "edit_distance",
    "load_ground_truth",
    "match_page",
    "normalize_formula",
    "normalize_table_html",
    "normalize_text",
    "normalized_edit_distance",
    "page_records",
    "parse_ground_truth",
    "select_pages",
    "split_markdown",
    "summarize",
    "teds",
]
