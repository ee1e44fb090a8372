"""python -m zoo.evaluate: scoring a folder from the command line, running a model through
Lightning with resumable per-page output, and bad input."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from tests.conftest import REPO
from tests.test_ocr import save_tiny_checkpoint
from tests.test_omnidocbench import (
    DEMO,
    GT_FILE,
    MALFORMED_MARKDOWN,
    OFFICIAL_DEMO,
    OFFICIAL_ENGLISH_PAGES,
    assert_figures,
)
from zoo.eval.omnidocbench import GroundTruthError
from zoo.evaluate import evaluate

METRICS_JSON_KEYS = {
    "text_edit", "formula_edit", "table_teds", "table_teds_structure", "table_edit",
    "reading_order_edit", "overall", "per_page_type", "n_pages", "n_missing",
}  # fmt: skip


@pytest.fixture
def demo(shared_dir: Path) -> Path:
    return shared_dir / DEMO


def compose_eval(out_dir: Path, overrides: list[str]) -> DictConfig:
    """The ``eval`` config as ``python -m zoo.evaluate`` composes it, writing into ``out_dir``."""
    with initialize_config_module("configs", version_base="1.3"):
        return compose(
            "eval",
            overrides=[
                f"out_dir={out_dir}",
                f"trainer.default_root_dir={out_dir}",
                "trainer.accelerator=cpu",
                "trainer.enable_progress_bar=false",
                *overrides,
            ],
        )


@pytest.mark.slow  # a fresh interpreter importing Lightning: ~10 s
def test_cli_scores_a_folder_with_a_page_filter(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "zoo.evaluate",
        f"predictions={demo / 'predictions_end2end'}", f"ground_truth={demo / GT_FILE}",
        "page_filter={language: english}", f"out_dir={out}", f"hydra.run.dir={tmp_path / 'hydra'}",
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": "."}
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert METRICS_JSON_KEYS <= set(metrics)
    assert_figures(metrics, OFFICIAL_ENGLISH_PAGES)
    assert metrics["n_pages"] == 7 and metrics["n_missing"] == 0
    assert "Reading-order edit" in result.stdout and "0.043" in result.stdout
    with (out / "pages.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 7 and {row["missing"] for row in rows} == {"False"}


def test_model_run_writes_pages_as_it_goes_and_resumes(demo: Path, tmp_path: Path) -> None:
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.ckpt")
    model_run = [
        f"ckpt_path={ckpt}", "data=omnidocbench", f"data.root={demo}", "data.num_workers=0",
        "data.batch_size=2", "generation.max_new_tokens=4", "page_filter={data_source: PPT2PDF}",
    ]  # fmt: skip
    first = evaluate(compose_eval(tmp_path / "first", model_run))
    predictions = tmp_path / "first" / "predictions"
    written = sorted(p.name for p in predictions.glob("*.md"))
    assert len(written) == 2 and (predictions / "prediction_run.json").is_file()
    assert first["n_pages"] == 2 and first["n_missing"] == 0
    assert (tmp_path / "first" / "metrics.json").is_file()

    # An interrupted run: one page done (kept as is), one page never written.
    (predictions / written[0]).write_text("# kept", encoding="utf-8")
    (predictions / written[1]).unlink()
    evaluate(compose_eval(tmp_path / "second", [*model_run, f"predictions={predictions}"]))
    assert (predictions / written[0]).read_text(encoding="utf-8") == "# kept"
    assert (predictions / written[1]).is_file()


def test_missing_predictions_count_as_empty_pages(demo: Path, tmp_path: Path) -> None:
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    for name in sorted(os.listdir(demo / "predictions_end2end"))[:3]:
        shutil.copy(demo / "predictions_end2end" / name, predictions)
    metrics = evaluate(
        compose_eval(
            tmp_path / "run", [f"predictions={predictions}", f"ground_truth={demo / GT_FILE}"]
        )
    )
    assert metrics["n_pages"] == 18 and metrics["n_missing"] == 15
    assert metrics["text_edit"] > OFFICIAL_DEMO["text_edit"]


def write_malformed_predictions(demo: Path, predictions: Path) -> Path:
    """A folder with one malformed markdown prediction per demo page."""
    predictions.mkdir()
    for i, image in enumerate(sorted(os.listdir(demo / "images"))):
        text = MALFORMED_MARKDOWN[i % len(MALFORMED_MARKDOWN)]
        (predictions / f"{Path(image).stem}.md").write_text(text, encoding="utf-8")
    return predictions


def test_malformed_markdown_never_crashes_and_pictures_are_drawn(
    demo: Path, tmp_path: Path
) -> None:
    predictions = write_malformed_predictions(demo, tmp_path / "predictions")
    overrides = [
        f"predictions={predictions}", f"ground_truth={demo / GT_FILE}", "pictures=true",
        "page_filter={data_source: exam_paper}",
    ]  # fmt: skip
    metrics = evaluate(compose_eval(tmp_path / "run", overrides))
    assert metrics["n_pages"] == 2 and metrics["text_edit"] is not None
    assert len(list((tmp_path / "run" / "reading_order").glob("*.png"))) == 2


def test_ground_truth_of_wrong_shape_names_the_first_bad_record(demo: Path, tmp_path: Path) -> None:
    records = json.loads((demo / GT_FILE).read_text(encoding="utf-8"))
    del records[2]["layout_dets"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(records), encoding="utf-8")
    overrides = [f"predictions={demo / 'predictions_end2end'}", f"ground_truth={bad}"]
    with pytest.raises(GroundTruthError, match=re.escape("record 2 (")):
        evaluate(compose_eval(tmp_path / "run", overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([], "nothing to evaluate"),
        (["ckpt_path=a.ckpt", "checkpoint=dir"], "give one model"),
        (["ckpt_path=a.ckpt"], "data=omnidocbench"),
        (["predictions=."], "ground_truth=FILE.json is needed"),
    ],
)
def test_incomplete_command_lines_say_what_is_missing(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        evaluate(compose_eval(tmp_path, overrides))
