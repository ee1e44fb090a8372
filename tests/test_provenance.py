"""Provenance with every score, and repetition loops counted: what a run scored and how, the
pages whose output ran into the token limit or ends in a loop."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.test_evaluate_cli import compose_eval
from tests.test_ocr import save_tiny_checkpoint
from tests.test_omnidocbench import DEMO, GT_FILE
from zoo.eval.predictions import score_predictions
from zoo.eval.provenance import (
    checkpoint_fingerprint,
    omnidocbench_version,
    provenance_differences,
)
from zoo.eval.repetition import ends_in_loop, write_generation_record
from zoo.evaluate import evaluate

PAGE = "docstructbench_llm-raw-scihub-o.O-j.physletb.2004.06.101.pdf_3.md"


@pytest.fixture
def demo(shared_dir: Path) -> Path:
    return shared_dir / DEMO


def test_a_text_ending_in_a_repeated_unit_is_a_loop(demo: Path) -> None:
    assert ends_in_loop("Intro.\n\n" + "<tr><td>1</td><td>2</td></tr>" * 10)
    assert ends_in_loop("x" + " 0" * 150 + "\n\n")  # trailing whitespace ignored
    assert ends_in_loop("start " + "A paragraph that the model repeats forever. " * 30)
    assert not ends_in_loop("Contents " + "." * 60 + " 7")  # a dot leader, then the page
    assert not ends_in_loop("ab" * 50)  # 100 characters: too short to call a loop
    assert not ends_in_loop("")
    for folder in ("predictions_end2end", "mds"):  # no real page is flagged
        assert not any(ends_in_loop(p.read_text()) for p in (demo / folder).glob("*.md"))


def test_loops_and_token_limits_are_counted(demo: Path, tmp_path: Path) -> None:
    predictions = tmp_path / "predictions"
    shutil.copytree(demo / "predictions_end2end", predictions)
    with (predictions / PAGE).open("a", encoding="utf-8") as handle:
        handle.write("\n\n" + "$x_{1}$ and " * 40)
    write_generation_record(predictions / sorted(p.name for p in predictions.iterdir())[0], True)
    metrics = score_predictions(predictions, demo / GT_FILE)
    assert metrics["n_repetition_loops"] == 2
    assert metrics["repetition_loop_rate"] == pytest.approx(2 / 18)
    flagged = sorted(page["page"] for page in metrics["pages"] if page["repetition_loop"])
    assert PAGE[:-3] in flagged and len(flagged) == 2


def test_scoring_records_the_ground_truth_and_matching(demo: Path) -> None:
    english = {"language": "english"}
    provenance = score_predictions(demo / "predictions_end2end", demo / GT_FILE, english)[
        "provenance"
    ]
    digest = hashlib.sha256((demo / GT_FILE).read_bytes()).hexdigest()
    assert provenance["ground_truth_sha256"] == digest
    assert provenance["ground_truth_pages"] == 18 and provenance["omnidocbench_version"] == "subset"
    assert provenance["page_filter"] == english and provenance["match_method"] == "quick_match"
    assert provenance["cdm_computed"] is False
    assert (omnidocbench_version(981), omnidocbench_version(1355)) == ("v1.0", "v1.5")


def test_checkpoint_fingerprint_tells_models_apart(tmp_path: Path) -> None:
    from tests.test_checkpoint import tiny_model

    first = save_tiny_checkpoint(tmp_path / "a.ckpt")
    again = checkpoint_fingerprint(first)
    assert again == checkpoint_fingerprint(first) and again["path"] == str(first)
    folder = tmp_path / "saved"
    tiny_model()[0].save_pretrained(folder)
    saved = checkpoint_fingerprint(folder)
    assert saved["n_tensors"] > 0 and saved != again
    key = "config_and_tensor_names_sha256"
    assert saved[key] != again[key]


def test_differences_name_each_setting_but_not_the_wall_time() -> None:
    runs = {
        "a": {"wall_time_s": 1.0, "generation": {"view_mode": "v2", "prompt": "p"}},
        "b": {"wall_time_s": 2.0, "generation": {"view_mode": "gundam", "prompt": "p"}},
    }
    assert provenance_differences(runs) == [
        'runs differ in generation.view_mode (a: "v2"; b: "gundam")'
    ]


def test_a_model_run_records_its_recipe_and_counts_token_limits(demo: Path, tmp_path: Path) -> None:
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.ckpt")
    overrides = [
        f"ckpt_path={ckpt}", "data=omnidocbench", f"data.root={demo}", "data.num_workers=0",
        "generation=official_v2", "generation.view_mode=null", "generation.max_new_tokens=3",
        "page_filter={data_source: PPT2PDF}",
    ]  # fmt: skip
    metrics = evaluate(compose_eval(tmp_path / "run", overrides))
    written = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    provenance = written["provenance"]
    generation = provenance["generation"]
    assert generation["name"] == "official_v2" and generation["ngram_window"] == 90
    assert generation["postprocess"] == "official_v2" and generation["max_new_tokens"] == 3
    assert generation["checkpoint"] == checkpoint_fingerprint(ckpt)
    assert provenance["page_filter"] == {"data_source": "PPT2PDF"}
    assert provenance["zoo_version"] and provenance["wall_time_s"] > 0
    assert "zoo_git_commit" in provenance
    # Three new tokens never reach EOS: both pages ran into the token limit.
    assert metrics["n_repetition_loops"] == 2 and metrics["repetition_loop_rate"] == 1.0
    with (tmp_path / "run" / "pages.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["repetition_loop"] for row in rows} == {"True"}
