"""OmniDocBench v1.5 evaluation: the official evaluator's figures on the demo data, the pieces
(normalisation, block splitting, matching, TEDS) and bad input.

Every pinned figure was produced by the official evaluator (opendatalab/OmniDocBench at commit
ca630f0, as mirrored by pyc96/OmniDocBench; ``python pdf_validation.py`` with an end2end config,
quick_match, text/formula/table Edit_dist and TEDS) on ``shared/omnidocbench_demo``, run on CPU
(about 1.5 s a run) outside this repository; the BLEU, CDM and detection modules it imports but
an end2end run never calls were stubbed. Where each figure sits in its
``*_metric_result.json``:

- text, formula and table edit, reading-order edit: ``<element>["all"]["Edit_dist"]
  ["ALL_page_avg"]``;
- ``table_teds`` / ``table_teds_structure``: ``table["all"]["TEDS"]["all"]`` (and
  ``TEDS_structure_only``), the mean over all matched tables (x100); per page type, the same
  entry of a run with ``filter: {data_source: <type>}``;
- ``*_page_avg``: ``table["page"]["TEDS"]["ALL"]`` and, per page type,
  ``["data_source: <type>"]``: TEDS averaged per page, then over pages (the entry the official
  ``tools/generate_result_tables.ipynb`` reads);
- per-page-type edit distances: ``<element>["page"]["Edit_dist"]["data_source: <type>"]``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from zoo.eval.omnidocbench import (
    PAGE_TYPES,
    GroundTruthError,
    load_ground_truth,
    match_page,
    normalize_formula,
    normalize_table_html,
    normalize_text,
    parse_ground_truth,
    split_markdown,
    teds,
)
from zoo.eval.predictions import format_table, score_predictions, write_metrics

TOLERANCE = 1e-3
DEMO = "omnidocbench_demo"
GT_FILE = "OmniDocBench_demo.json"
# The page emptied (official run) or deleted (ours) for the missing-prediction figures.
DROPPED_PAGE = "docstructbench_llm-raw-scihub-o.O-j.physletb.2004.06.101.pdf_3.md"

OFFICIAL_DEMO = {
    "text_edit": 0.3513169474289845,
    "formula_edit": 0.3189450665779052,
    "table_teds": 78.38125415599836,
    "table_teds_structure": 91.15886967813946,
    "table_teds_page_avg": 80.01187319330195,
    "table_teds_structure_page_avg": 91.45518147659233,
    "table_edit": 0.20271906338695658,
    "reading_order_edit": 0.16133705209047675,
}
OFFICIAL_DEMO_PER_PAGE_TYPE = {
    "PPT2PDF": {"text_edit": 0.003787878787878788, "reading_order_edit": 0.0},
    "academic_literature": {
        "text_edit": 0.18041009388777418,
        "formula_edit": 0.30602782071097373,
        "table_teds": 70.20650214108632,
        "table_teds_structure": 94.25287356321839,
        "table_teds_page_avg": 70.20650214108632,
        "table_teds_structure_page_avg": 94.25287356321839,
        "table_edit": 0.21774193548387097,
        "reading_order_edit": 0.06666666666666667,
    },
    "book": {
        "text_edit": 0.40554275473630313,
        "table_teds": 74.77954144620811,
        "table_teds_structure": 75.92592592592592,
        "table_teds_page_avg": 74.77954144620811,
        "table_teds_structure_page_avg": 75.92592592592592,
        "table_edit": 0.17744154057771663,
        "reading_order_edit": 0.0,
    },
    "colorful_textbook": {
        "text_edit": 0.47120654750148133,
        "table_teds": 99.95049504950495,
        "table_teds_structure": 100.0,
        "table_teds_page_avg": 99.95049504950495,
        "table_teds_structure_page_avg": 100.0,
        "table_edit": 0.007462686567164179,
        "reading_order_edit": 0.26785714285714285,
    },
    "exam_paper": {
        "text_edit": 0.03211441336441336,
        "formula_edit": 0.3318623124448367,
        "table_teds": 88.23529411764706,
        "table_teds_structure": 88.23529411764706,
        "table_teds_page_avg": 88.23529411764706,
        "table_teds_structure_page_avg": 88.23529411764706,
        "table_edit": 0.16,
        "reading_order_edit": 0.08333333333333333,
    },
    "magazine": {
        "text_edit": 0.3228446928926079,
        "table_teds": 96.58888730317302,
        "table_teds_structure": 100.0,
        "table_teds_page_avg": 96.58888730317302,
        "table_teds_structure_page_avg": 100.0,
        "table_edit": 0.027522935779816515,
        "reading_order_edit": 0.0,
    },
    "newspaper": {"text_edit": 0.5619868282602818, "reading_order_edit": 0.4931506849315068},
    "note": {
        "text_edit": 0.581582807436466,
        "table_teds": 69.8892786281179,
        "table_teds_structure": 91.66666666666667,
        "table_teds_page_avg": 69.8892786281179,
        "table_teds_structure_page_avg": 91.66666666666667,
        "table_edit": 0.4045236658621615,
        "reading_order_edit": 0.038461538461538464,
    },
    "research_report": {
        "text_edit": 0.6023765099936541,
        "table_teds": 71.42442141537614,
        "table_teds_structure": 89.94708994708995,
        "table_teds_page_avg": 75.28379071293112,
        "table_teds_structure_page_avg": 90.67460317460318,
        "table_edit": 0.212627570174859,
        "reading_order_edit": 0.5025641025641026,
    },
}
# Ground-truth markdown (mds/) scored as predictions: the official evaluator is not perfect on
# display formulas (markdown formulas are normalised differently from the JSON LaTeX).
OFFICIAL_GT_MARKDOWN = {
    "text_edit": 0.0,
    "formula_edit": 0.00264783759929391,
    "table_teds": 100.0,
    "table_teds_structure": 100.0,
    "table_edit": 0.0,
    "reading_order_edit": 0.0,
}
# The demo predictions with DROPPED_PAGE replaced by an empty file.
OFFICIAL_ONE_EMPTY_PAGE = {
    "text_edit": 0.3938737121743829,
    "formula_edit": 0.6659311562224184,
    "table_teds": 78.38125415599836,
    "table_teds_structure": 91.15886967813946,
    "table_edit": 0.20271906338695658,
    "reading_order_edit": 0.2168926076460323,
}
# The demo predictions with ``filter: {language: english}`` (no page has two tables, so the
# TEDS mean over tables equals the page average here).
OFFICIAL_ENGLISH_PAGES = {
    "text_edit": 0.08705623912743768,
    "formula_edit": 0.3189450665779052,
    "table_teds": 86.13076376941278,
    "table_teds_structure": 94.16272256028849,
    "table_edit": 0.1284015406836784,
    "reading_order_edit": 0.04285714285714286,
}


def assert_figures(metrics: dict, expected: dict) -> None:
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=TOLERANCE), key


@pytest.fixture
def demo(shared_dir: Path) -> Path:
    return shared_dir / DEMO


def test_demo_predictions_match_official_figures(demo: Path) -> None:
    metrics = score_predictions(demo / "predictions_end2end", demo / GT_FILE)
    assert_figures(metrics, OFFICIAL_DEMO)
    assert metrics["n_pages"] == 18 and metrics["n_missing"] == 0
    for page_type, expected in OFFICIAL_DEMO_PER_PAGE_TYPE.items():
        breakdown = metrics["per_page_type"][page_type]
        assert breakdown["n_pages"] == 2
        assert_figures(breakdown, expected)
        absent = set(OFFICIAL_DEMO) - set(expected)
        assert all(breakdown[key] is None for key in absent), page_type
    # Overall without CDM: the mean of (1 - text edit) * 100 and table TEDS, and it says so.
    text, table = OFFICIAL_DEMO["text_edit"], OFFICIAL_DEMO["table_teds"]
    assert metrics["overall"] == pytest.approx(((1 - text) * 100 + table) / 2, abs=TOLERANCE)
    assert metrics["formula_cdm"] is None and "CDM" in metrics["overall_note"]


def test_ground_truth_markdown_scores_near_perfect(demo: Path) -> None:
    metrics = score_predictions(demo / "mds", demo / GT_FILE)
    assert_figures(metrics, OFFICIAL_GT_MARKDOWN)
    assert metrics["overall"] == pytest.approx(100.0)


def test_missing_prediction_counts_as_empty_page(demo: Path, tmp_path: Path) -> None:
    predictions = tmp_path / "predictions"
    shutil.copytree(demo / "predictions_end2end", predictions)
    (predictions / DROPPED_PAGE).unlink()
    metrics = score_predictions(predictions, demo / GT_FILE)
    assert_figures(metrics, OFFICIAL_ONE_EMPTY_PAGE)
    assert metrics["n_pages"] == 18 and metrics["n_missing"] == 1
    missing = [page for page in metrics["pages"] if page["missing"]]
    assert [page["page"] + ".md" for page in missing] == [DROPPED_PAGE]
    assert missing[0]["text_edit"] == 1.0 and missing[0]["formula_edit"] == 1.0


def test_page_filter_matches_official_filter(demo: Path) -> None:
    metrics = score_predictions(
        demo / "predictions_end2end", demo / GT_FILE, page_filter={"language": "english"}
    )
    assert_figures(metrics, OFFICIAL_ENGLISH_PAGES)
    assert metrics["n_pages"] == 7


def test_metrics_json_and_terminal_table(demo: Path, tmp_path: Path) -> None:
    metrics = score_predictions(demo / "predictions_end2end", demo / GT_FILE)
    written = json.loads(write_metrics(metrics, tmp_path / "run").read_text(encoding="utf-8"))
    required = {
        "text_edit", "formula_edit", "table_teds", "table_teds_structure", "table_edit",
        "reading_order_edit", "overall", "per_page_type", "n_pages", "n_missing", "pages",
    }  # fmt: skip
    assert required <= set(written)
    assert set(written["per_page_type"]) == set(PAGE_TYPES)
    assert len(written["pages"]) == 18
    table = format_table(metrics)
    assert "0.351" in table and "80.01" in table and "CDM" in table
    assert "78.38" in table and "91.16" in table
    assert all(page_type in table for page_type in PAGE_TYPES)


# --- the pieces ------------------------------------------------------------------------------


def test_text_normalisation_keeps_words_digits_and_cjk() -> None:
    assert normalize_text("Hello, world! 2024 年。") == "Helloworld2024年"
    assert normalize_text("area $\\alpha^2$ m") == "areaα2m"  # inline LaTeX rendered first


def test_formula_normalisation_drops_delimiters_fonts_and_spaces() -> None:
    assert normalize_formula("$$\\mathbf{X} = \\left( a \\right) \\tag{3}$$") == "{x}=(a)"
    assert normalize_formula("\\[ E = mc^2 \\]") == "e=mc^2"


def test_table_normalisation_is_canonical() -> None:
    a = (
        '<table class="t"><thead><tr><th>a</th></tr></thead>'
        "<tbody><tr><td>1</td></tr></tbody></table>"
    )
    b = "<table>\n<tr><td>a</td></tr>\n<tr><td>1</td></tr></table>"
    assert normalize_table_html(a) == normalize_table_html(b)
    assert normalize_table_html("no table here") == ""


def test_teds_definition() -> None:
    table = "<html><body><table><tr><td>{}</td><td>b</td></tr></table></body></html>"
    assert teds(table.format("a"), table.format("a")) == 1.0
    # One cell of one character differs: rename cost 1 over 3 nodes below the table.
    assert teds(table.format("x"), table.format("a")) == pytest.approx(1 - 1 / 3)
    assert teds(table.format("x"), table.format("a"), structure_only=True) == 1.0
    assert teds("", table.format("a")) == 0.0


def test_markdown_split_into_blocks() -> None:
    markdown = (
        "# Title\n\nSome text with $x^2$.\n\n$$\ny = 1\n$$\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n\n<table><tr><td>z</td></tr></table>\n"
    )
    kinds = [(block.category, block.kind) for block in split_markdown(markdown)]
    assert ("equation_isolated", "equation_inline") in kinds
    assert ("equation_isolated", "equation_isolated") in kinds
    assert ("html_table", "md2html_table") in kinds and ("html_table", "html_table") in kinds
    texts = [block.content for block in split_markdown(markdown) if block.kind == "text_block"]
    assert texts == ["# Title", "Some text with $x^2$."]


def _page(*blocks: dict) -> dict:
    return {
        "layout_dets": list(blocks),
        "page_info": {
            "image_path": "p.jpg",
            "page_attribute": {"data_source": "book"},
        },
        "extra": {"relation": []},
    }


def test_split_paragraph_matches_its_block_and_headers_are_ignored() -> None:
    long_text = "The quick brown fox jumps over the lazy dog near the river bank today."
    page = parse_ground_truth(
        [
            _page(
                {"category_type": "header", "text": "Journal of Tests", "order": 1},
                {"category_type": "text_block", "text": long_text, "order": 2},
                {"category_type": "text_block", "text": "A second paragraph here.", "order": 3},
            )
        ]
    )[0]
    half = len(long_text) // 2
    markdown = (
        f"Journal of Tests\n\n{long_text[:half]}\n\n{long_text[half:]}\n\nA second paragraph here."
    )
    matches = match_page(page, markdown)
    assert [pair.gt_category for pair in matches.text] == ["text_block", "text_block"]
    assert all(pair.norm_gt == pair.norm_pred.replace(" ", "") for pair in matches.text)
    assert matches.reading_order == ([2, 3], [2, 3])


def test_blocks_merged_in_one_prediction_are_scored_together() -> None:
    page = parse_ground_truth(
        [
            _page(
                {"category_type": "text_block", "text": "alpha beta gamma", "order": 1},
                {"category_type": "text_block", "text": "delta epsilon zeta", "order": 2},
                {"category_type": "text_block", "text": "completely unrelated words", "order": 3},
            )
        ]
    )[0]
    # The second block, with 4 typos in 16 characters, sits inside the first prediction.
    matches = match_page(page, "alpha beta gamma dolta ipsilan zata\n\ncompletely unrelated words")
    merged = [pair for pair in matches.text if pair.gt_orders == [1, 2]]
    assert len(merged) == 1
    assert merged[0].norm_gt == "alphabetagammadeltaepsilonzeta"
    assert merged[0].norm_pred == "alphabetagammadoltaipsilanzata"
    assert matches.reading_order == ([1, 2, 3], [1, 2, 3])


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ({"pages": []}, "expected a JSON list of pages"),
        ([_page(), "oops"], "record 1: expected an object"),
        ([{"layout_dets": []}], "record 0: expected 'page_info'"),
        ([_page({"text": "no category"})], "record 0 (p.jpg): layout_dets[0]"),
        ([_page({"category_type": "text_block"})], "expected a string 'text'"),
        ([_page({"category_type": "table", "latex": "x"})], "expected a string 'html'"),
        ([_page({"category_type": "title", "text": "t", "order": "1"})], "'order'"),
        ([{**_page(), "extra": {"relation": "x"}}], "'extra.relation'"),
    ],
)
def test_ground_truth_of_wrong_shape_names_first_bad_record(records, message) -> None:
    with pytest.raises(GroundTruthError, match=re.escape(message)):
        parse_ground_truth(records, "gt.json")


def test_ground_truth_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "gt.json"
    path.write_text("[{", encoding="utf-8")
    with pytest.raises(GroundTruthError, match="not valid JSON"):
        load_ground_truth(path)


MALFORMED_MARKDOWN = [
    "<table><tr><td>unclosed",
    "<table><tr><td colspan='x'>1</td></tr></table>",
    "<table><table><tr><td>nested</td></tr></table>",
    "</table></table><td>stray</td>",
    "| a | b |\n|---|\n| 1 |\n| 2 | 3 | 4 |\n",
    "\\begin{tabular}{cc} a & b \\\\ \\begin{tabular}",
    "$$ unbalanced \\[ \\begin{array}{l} a \\\\ \\end{array",
    "$\\frac{$ $\\left($ \\( \\) $$",
    "\x00\x01 binary \ufffd junk " * 50,
    "",
]


def test_malformed_markdown_and_tables_never_crash(demo: Path, tmp_path: Path) -> None:
    pages = load_ground_truth(demo / GT_FILE)
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    for i, page in enumerate(pages):
        text = MALFORMED_MARKDOWN[i % len(MALFORMED_MARKDOWN)]
        (predictions / f"{page.name}.md").write_text(text, encoding="utf-8")
    metrics = score_predictions(predictions, demo / GT_FILE)
    assert metrics["n_pages"] == 18 and metrics["n_missing"] == 0
    for key in OFFICIAL_DEMO:
        assert metrics[key] is not None
    assert 0.9 <= metrics["text_edit"] <= 1.0  # nothing useful was predicted
    assert (
        teds("<html><body><table><tr><td colspan='x'>1</td></tr></table></body></html>", "x") == 0
    )


def test_predictions_folder_must_exist(demo: Path, tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match="predictions="):
        score_predictions(tmp_path / "nowhere", demo / GT_FILE)
