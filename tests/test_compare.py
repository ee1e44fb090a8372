"""python -m zoo.compare: the side-by-side table, the reference rows and the plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import SHARED
from tests.test_omnidocbench import DEMO, GT_FILE
from zoo.compare import main
from zoo.eval.comparison import REFERENCE_RUNS, compare, find_runs
from zoo.eval.predictions import score_predictions, write_metrics


@pytest.fixture(scope="module")
def demo_metrics() -> dict:
    demo = SHARED / DEMO
    if not demo.is_dir():
        pytest.skip(f"the shared demo data {demo} is absent")
    return score_predictions(demo / "predictions_end2end", demo / GT_FILE)


@pytest.fixture
def multirun(tmp_path: Path, demo_metrics: dict) -> Path:
    """A Hydra multirun folder with two evaluation runs and a training run."""
    root = tmp_path / "multirun"
    for number, override in enumerate(["encoder=causal_flow", "encoder=deepencoder"]):
        run = root / str(number)
        metrics = dict(demo_metrics, text_edit=demo_metrics["text_edit"] + number / 10)
        write_metrics(metrics, run)
        (run / ".hydra").mkdir()
        (run / ".hydra" / "overrides.yaml").write_text(f"- {override}\n- out_dir=x\n")
    (root / "train").mkdir()
    (root / "train" / "metrics.json").write_text(json.dumps({"train/loss": 1.0}))
    return root


def test_reference_figures_are_consistent_with_the_overall_formula() -> None:
    for figures in REFERENCE_RUNS.values():
        overall = (1 - figures["text_edit"]) * 100 + figures["formula_cdm"] + figures["table_teds"]
        assert overall / 3 == pytest.approx(figures["overall"], abs=0.01)


def test_table_csv_and_plots(multirun: Path, tmp_path: Path, capsys) -> None:
    files = compare([multirun], tmp_path / "out")
    table = files["markdown"].read_text(encoding="utf-8")
    assert "encoder=causal_flow" in table and "encoder=deepencoder" in table
    assert "train" not in table.split("\n\n")[0]
    assert "| all | DeepSeek-OCR 2 (paper) | - | 91.09 | 0.048 | 90.31 |" in table
    # Overall without CDM: ((1 - 0.3513) * 100 + table TEDS 78.38) / 2.
    assert "| all | encoder=causal_flow | 18 | 71.62 | 0.351 |" in table
    assert "| all | encoder=deepencoder | 18 |" in table and "| 0.451 |" in table
    assert table.split("\n", 1)[0] == capsys.readouterr().out.split("\n", 1)[0]

    with files["csv"].open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    # all pages: 2 runs + 2 references; each of the 9 page types (2 demo pages each): 2 runs.
    assert len(rows) == 4 + 9 * 2
    assert {row["scope"] for row in rows if row["run"].endswith("(paper)")} == {"all"}

    plots = {name: path for name, path in files.items() if name.startswith("plot_")}
    assert {"plot_overall", "plot_reading_order_edit", "plot_reading_order_by_page_type"} <= set(
        plots
    )
    assert all(Image.open(path).format == "PNG" for path in plots.values())


def test_run_directories_are_found_or_refused(multirun: Path, tmp_path: Path) -> None:
    assert find_runs([multirun]) == [multirun / "0", multirun / "1"]
    assert find_runs([multirun / "1", multirun]) == [multirun / "1", multirun / "0"]
    with pytest.raises(FileNotFoundError, match="no evaluation metrics.json"):
        find_runs([multirun / "train"])
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nowhere")])


def test_runs_that_differ_in_a_setting_are_warned_about(
    demo_metrics: dict, tmp_path: Path, caplog
) -> None:
    for name, prompt in [("a", "markdown"), ("b", "free")]:
        provenance = {**demo_metrics["provenance"], "generation": {"prompt": prompt}}
        write_metrics({**demo_metrics, "provenance": provenance}, tmp_path / name)
    files = compare([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    markdown = files["markdown"].read_text(encoding="utf-8")
    warning = 'runs differ in generation.prompt (a: "markdown"; b: "free")'
    assert warning in caplog.text and f"> warning: {warning}" in markdown
    assert "ground_truth_sha256" in markdown and "wall_time" not in caplog.text
    assert "repetition_loop_rate ↓" in markdown  # loops are a column like any metric
