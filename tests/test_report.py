"""report.html: one self-contained page with the table, provenance, plots and a page gallery."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from PIL import Image

from tests.conftest import SHARED
from tests.test_evaluate_cli import compose_eval, write_malformed_predictions
from tests.test_omnidocbench import DEMO, GT_FILE
from zoo.compare import main
from zoo.eval.comparison import REFERENCE_RUNS
from zoo.eval.omnidocbench import PAGE_TYPES, match_page, parse_ground_truth
from zoo.eval.predictions import score_predictions, write_metrics
from zoo.eval.report import block_diffs, diff_html, disagreement, report_run
from zoo.evaluate import evaluate

RUNS = ("demo", "altered")


def _alter(source: Path, target: Path) -> None:
    """The demo predictions with every third page read bottom-up."""
    target.mkdir(parents=True)
    for index, page in enumerate(sorted(source.glob("*.md"))):
        blocks = page.read_text(encoding="utf-8").split("\n\n")
        if index % 3 == 0:
            blocks.reverse()
        (target / page.name).write_text("\n\n".join(blocks), encoding="utf-8")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[BeautifulSoup, dict]:
    """The report of the demo predictions against a copy with reordered pages, whose
    provenance says it was generated with another prompt."""
    demo = SHARED / DEMO
    if not demo.is_dir():
        pytest.skip(f"the shared demo data {demo} is absent")
    root = tmp_path_factory.mktemp("report")
    _alter(demo / "predictions_end2end", root / "altered_predictions")
    metrics = {}
    for name, predictions in zip(
        RUNS, [demo / "predictions_end2end", root / "altered_predictions"], strict=True
    ):
        metrics[name] = score_predictions(predictions, demo / GT_FILE)
        metrics[name]["provenance"]["generation"] = {"prompt": name}
        write_metrics(metrics[name], root / name)
    out = root / "out"
    assert main([str(root / name) for name in RUNS] + ["--out", str(out), "--html"]) == 0
    return BeautifulSoup((out / "report.html").read_text(encoding="utf-8"), "lxml"), metrics


def test_one_table_row_per_run_and_reference(report) -> None:
    soup, _ = report
    rows = soup.select("#comparison tr[data-scope=all]")
    assert [row["data-run"] for row in rows if "reference" not in row.get("class", [])] == list(
        RUNS
    )
    assert {row["data-run"] for row in rows if "reference" in row.get("class", [])} == set(
        REFERENCE_RUNS
    )
    assert "overall ↑" in soup.select_one("#comparison tr").get_text()
    assert {row["data-scope"] for row in soup.select("#by-type tr[data-scope]")} <= set(PAGE_TYPES)


def test_provenance_fields_and_warnings(report) -> None:
    soup, metrics = report
    fields = {row["data-field"]: row for row in soup.select("#provenance tr[data-field]")}
    for field in ("ground_truth_sha256", "omnidocbench_version", "match_method", "predictions"):
        assert field in fields
    sha = metrics["demo"]["provenance"]["ground_truth_sha256"]
    assert fields["ground_truth_sha256"].get_text().count(sha) == 2
    assert "differs" in fields["generation.prompt"]["class"]
    warnings = [p.get_text() for p in soup.select("p.warning")]
    assert warnings == ['runs differ in generation.prompt (demo: "demo"; altered: "altered")']


def test_gallery_has_one_card_per_page_sorted_by_disagreement(report) -> None:
    soup, metrics = report
    cards = soup.select("article.page-card")
    records = {name: {r["page"]: r for r in metrics[name]["pages"]} for name in RUNS}
    assert sorted(card["data-page"] for card in cards) == sorted(records["demo"])
    scores = [float(card["data-disagreement"]) for card in cards]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.5
    for card, score in zip(cards, scores, strict=True):
        expected = disagreement([records[name][card["data-page"]] for name in RUNS])
        assert score == pytest.approx(expected, abs=1e-4)
    types = {card["data-page-type"] for card in cards}
    assert types == set(PAGE_TYPES)  # the demo has two pages of each type
    options = [option["value"] for option in soup.select("#page-type-filter option")]
    assert options == ["", *sorted(types)]
    # one block diff per run, marked up
    first = cards[0]
    assert len(first.select("details")) == len(RUNS) and first.select("td.diff del")


def test_inline_images_decode_and_nothing_is_fetched(report) -> None:
    soup, _ = report
    for card in soup.select("article.page-card"):
        assert len(card.select(".panels img")) == 1 + len(RUNS)  # ground truth + one per run
    images = soup.find_all("img")
    assert len(images) > 3 * 18
    for image in images:
        header, payload = image["src"].split(",", 1)
        assert header in ("data:image/jpeg;base64", "data:image/png;base64")
        decoded = Image.open(io.BytesIO(base64.b64decode(payload)))
        decoded.load()
        assert max(decoded.size) <= 1000 or header.endswith("png;base64")
    linked = [tag.get(attribute) for tag in soup.find_all(True) for attribute in ("src", "href")]
    assert all(link.startswith("data:") for link in linked if link)
    assert not soup.find_all("link") and not soup.select("script[src]")
    assert "http://" not in str(soup.style) and "url(" not in str(soup.style)


def test_diffs_mark_inserted_and_deleted_words_on_a_crafted_page() -> None:
    page = parse_ground_truth(
        [
            {
                "page_info": {"image_path": "crafted.png", "page_attribute": {}},
                "layout_dets": [
                    {
                        "category_type": "text_block",
                        "text": "The quick brown fox jumps over the lazy dog.",
                        "order": 1,
                    }
                ],
            }
        ]
    )[0]
    [row] = block_diffs(match_page(page, "The quick red fox jumps over the lazy old dog."))
    assert row["order"] == "1" and row["category"] == "text_block" and 0 < row["distance"] < 0.3
    diff = BeautifulSoup(row["diff"], "html.parser")
    assert [tag.get_text() for tag in diff.find_all("del")] == ["brown"]
    assert [tag.get_text() for tag in diff.find_all("ins")] == ["red", "old "]
    assert diff.get_text().startswith("The quick ")
    assert diff_html("a < b", "a > b") == "a <del>&lt;</del><ins>&gt;</ins> b"


def test_disagreement_is_the_spread_across_runs_or_the_error_of_one_run() -> None:
    a = {"text_edit": 0.1, "reading_order_edit": 0.5}
    b = {"text_edit": 0.4, "reading_order_edit": 0.6}
    assert disagreement([a, b]) == pytest.approx(0.3)
    assert disagreement([a]) == 0.5
    assert disagreement([a, {"text_edit": None, "reading_order_edit": None}]) == 0.0
    assert disagreement([a, None]) == 0.0


def test_a_run_without_its_predictions_is_named(tmp_path: Path) -> None:
    metrics = {"provenance": {"ground_truth": "gt.json"}}
    with pytest.raises(FileNotFoundError, match="run r .*predictions folder"):
        report_run("r", tmp_path, metrics)


def test_evaluate_writes_a_report_of_malformed_predictions(
    shared_dir: Path, tmp_path: Path
) -> None:
    demo = shared_dir / DEMO
    predictions = write_malformed_predictions(demo, tmp_path / "predictions")
    overrides = [
        f"predictions={predictions}", f"ground_truth={demo / GT_FILE}", "report=true",
        "page_filter={data_source: exam_paper}", "report_max_pages=1",
    ]  # fmt: skip
    evaluate(compose_eval(tmp_path / "run", overrides))
    soup = BeautifulSoup((tmp_path / "run" / "report.html").read_text("utf-8"), "lxml")
    assert len(soup.select("#comparison tr[data-scope=all]")) == 1 + len(REFERENCE_RUNS)
    [card] = soup.select("article.page-card")
    assert card["data-page-type"] == "exam_paper" and len(card.select(".panels img")) == 2
    images = soup.select_one("#provenance tr[data-field=images]").get_text()
    assert str((demo / "images").resolve()) in images
