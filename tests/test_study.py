"""The study command: its grid composes into real runs, its statistics are right, and a smoke
run of two systems trains, evaluates, records, resumes and reports."""

from __future__ import annotations

import json
import math

import pytest
from omegaconf import OmegaConf

from tests.conftest import compose_train
from zoo.studies.grid import READING_ORDER
from zoo.studies.statistics import holm_adjust, mean_interval, paired_difference_p, paired_tests


def test_mean_interval_is_students_t() -> None:
    interval = mean_interval([1.0, 2.0, 3.0])
    # t(0.975, 2 df) = 4.3027 (statistical tables); sd = 1, n = 3
    assert interval.mean == 2.0
    assert interval.half_width == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)
    assert mean_interval([0.5]).half_width == 0.0
    with pytest.raises(ValueError, match="at least one"):
        mean_interval([])


def test_paired_test_separates_a_shift_from_noise() -> None:
    base = [0.1 * (k % 7) for k in range(40)]
    assert paired_difference_p(base, base) == 1.0
    shifted = [b + 0.05 + 0.01 * (k % 3) for k, b in enumerate(base)]
    assert paired_difference_p(shifted, base) < 1e-6
    noisy = [b + (0.02 if k % 2 else -0.02) for k, b in enumerate(base)]
    assert paired_difference_p(noisy, base) > 0.5
    with pytest.raises(ValueError, match="length"):
        paired_difference_p(base, base[:-1])


def test_holm_adjustment_matches_a_worked_example() -> None:
    # Holm (1979) step-down: sorted p (0.01, 0.02, 0.04) x (3, 2, 1), running maximum
    adjusted = holm_adjust({"a": 0.04, "b": 0.01, "c": 0.02})
    assert adjusted == pytest.approx({"a": 0.04, "b": 0.03, "c": 0.04})


def test_paired_tests_compare_each_system_with_the_baseline_on_shared_pages() -> None:
    pages = {f"p{k}": 0.1 * (k % 5) for k in range(30)}
    per_page = {
        "base": pages,
        "same": dict(pages),
        "worse": {p: v + 0.2 for p, v in pages.items()},
        "partial": {p: v for p, v in list(pages.items())[:10]},
    }
    tests = paired_tests(per_page, "base")
    assert set(tests) == {"same", "worse", "partial"}
    assert tests["worse"].mean_difference == pytest.approx(0.2)
    assert tests["worse"].p_holm < 0.001 and tests["same"].p_holm == 1.0
    assert tests["partial"].n_pages == 10


def test_the_reading_order_grid_is_the_issues_grid_and_every_system_composes() -> None:
    assert [s.name for s in READING_ORDER.systems] == [
        "deepencoder", "causal_flow", "mask_bidirectional_queries", "mask_causal",
        "mask_bidirectional", "query_ratio_half", "encoder_decoder_queries",
    ]  # fmt: skip
    assert [i.kind for i in READING_ORDER.interventions] == ["shuffle", "other_image"]
    for system in READING_ORDER.systems:
        cfg = compose_train(system.train_overrides(READING_ORDER.experiment))
        assert cfg.data.style.content == "glyph_blocks", system.name
        assert cfg.model.image_mode.global_size == 512, system.name
        assert cfg.module.frozen_until == {"encoder": 600}, system.name  # the staged recipe
        assert cfg.data.style.glyph_px == 96 and cfg.data.style.alphabet == "0123456789"
    cfg = compose_train(READING_ORDER.systems[4].train_overrides(READING_ORDER.experiment))
    assert cfg.encoder.mask == "bidirectional" and not cfg.encoder.with_queries
    # every system builds a different encoder: an ablation that composes back to v2 (the
    # command line's encoder= overriding the ablation's own) would train v2 twice
    encoders = [
        OmegaConf.to_yaml(compose_train(s.train_overrides(READING_ORDER.experiment)).encoder)
        for s in READING_ORDER.systems
    ]
    assert len(set(encoders)) == len(encoders)
    cfg = compose_train(READING_ORDER.systems[6].train_overrides(READING_ORDER.experiment))
    assert cfg.encoder.name == "cross_attention_queries"
    # the next rung starts from a model that reads: its encoder trains from the first step
    assert compose_train(["experiment=study_glyph_words"]).module.frozen_until is None


def test_the_study_rung_puts_one_glyph_in_one_token_and_reads_columns_out_of_raster_order():
    """The rung's type size is chosen against the encoder's token size (56 px put 1.8 glyphs in
    one 64 px token and was not read in the budget), and its held-out pages still test reading
    order: a two-column page is read column after column, not row after row."""
    from tests.test_layout_engine import raster_order, reading_order
    from zoo.data.layout_engine import face, plan_page

    cfg = compose_train(["experiment=study_glyph_blocks", "encoder=causal_flow"])
    style, view = cfg.data.style, cfg.model.image_mode.global_size
    token_px = cfg.data.page_size / math.isqrt(cfg.encoder.query_sets[view])
    advance = face("sans", style.glyph_px).width(style.alphabet) / len(style.alphabet)
    assert 0.8 <= advance / token_px <= 1.25
    pages = [
        plan_page(cfg.data.val_seed, i, cfg.data.page_size, **style)
        for i in range(cfg.data.num_val)
    ]
    two_columns = [p for p in pages if p.attributes["layout"] == "double_column"]
    assert len(two_columns) > len(pages) / 4
    out_of_raster = sum(raster_order(p.blocks) != reading_order(p.blocks) for p in two_columns)
    assert out_of_raster > len(two_columns) / 2


def test_selecting_an_intervention_keeps_the_system_it_needs() -> None:
    grid = READING_ORDER.select(["intervention_shuffle", "deepencoder"])
    assert [s.name for s in grid.systems] == ["deepencoder", "causal_flow"]
    assert grid.baseline == "causal_flow"
    with pytest.raises(ValueError, match="unknown systems"):
        READING_ORDER.select(["vit_huge"])


def _write_records(results, scores: dict[tuple[str, int], dict[str, tuple[float, float]]]) -> None:
    """Run records as the runner writes them: per page (reading-order edit, text edit)."""
    for (system, seed), pages in scores.items():
        record = {
            "system": system,
            "seed": seed,
            "intervention": None,
            "validation": {"val/image_reliance": 1.0 + seed},
            "evaluation": {
                "reading_order_edit": sum(r for r, _ in pages.values()) / len(pages),
                "text_edit": sum(t for _, t in pages.values()) / len(pages),
            },
            "pages": {
                page: {"reading_order_edit": r, "text_edit": t} for page, (r, t) in pages.items()
            },
        }
        path = results / "runs" / system / f"seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))


def test_report_breaks_both_edit_distances_down_by_layout_over_seeds(tmp_path) -> None:
    from zoo.studies.report import build_report

    groups = {"a": ["single_column"], "b": ["single_column"], "c": ["double_column"]}
    heldout = {"seed": 7, "n_pages": 3, "page_size": 512, "style": {}, "page_groups": groups}
    (tmp_path / "heldout.json").write_text(json.dumps(heldout))
    _write_records(
        tmp_path,
        {
            ("causal_flow", 0): {"a": (0.0, 0.1), "b": (0.2, 0.3), "c": (0.5, 0.6)},
            ("causal_flow", 1): {"a": (0.0, 0.1), "b": (0.4, 0.1), "c": (0.3, 0.2)},
            ("deepencoder", 0): {"a": (0.0, 0.0), "b": (0.0, 0.0), "c": (1.0, 0.4)},
        },
    )
    grid = READING_ORDER.select(["causal_flow", "deepencoder"])
    summary = build_report(grid, tmp_path)

    flow = summary["systems"]["causal_flow"]
    # one column: the seeds' means over pages a and b are 0.1 and 0.2 (reading order)
    one_column = flow["groups"]["reading_order_edit"]["single_column"]
    assert one_column.mean == pytest.approx(0.15) and one_column.n == 2
    assert one_column.half_width == pytest.approx(12.7062 * 0.05, rel=1e-4)  # t(0.975, 1 df)
    assert flow["groups"]["text_edit"]["double_column"].mean == pytest.approx(0.4)
    assert flow["image_reliance"].mean == pytest.approx(1.5)
    v1 = summary["systems"]["deepencoder"]["groups"]["text_edit"]["double_column"]
    assert (v1.mean, v1.n) == (pytest.approx(0.4), 1)
    # v1 against v2 on the seed-averaged pages (v2: 0.1, 0.2, 0.4 text edit; v1: 0, 0, 0.4)
    test = summary["tests"]["text_edit"]["deepencoder"]
    assert test.mean_difference == pytest.approx((-0.1 - 0.2 + 0.0) / 3)

    table = (tmp_path / "table.md").read_text()
    assert "Reading-order edit per layout type" in table and "Text edit per layout type" in table
    assert "| 1 column (2) | 2 columns (1) |" in table and "3 columns" not in table
    assert (tmp_path / "by_layout.png").stat().st_size > 0
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["systems"]["causal_flow"]["seeds"] == [0, 1]
    assert written["systems"]["causal_flow"]["per_seed"]["text_edit"] == pytest.approx(
        [1 / 3, 2 / 15]
    )


@pytest.mark.slow
def test_study_smoke_run_trains_evaluates_records_resumes_and_reports(tmp_path) -> None:
    from zoo.study import main

    results, work = tmp_path / "results", tmp_path / "work"
    args = [
        "reading_order", "--systems", "causal_flow", "deepencoder", "intervention_shuffle",
        "--seeds", "0", "--results", str(results), "--work", str(work),
        "--max-new-tokens", "12",
        "trainer.max_steps=2", "trainer.val_check_interval=2",
        "callbacks.model_checkpoint.every_n_train_steps=2", "data.num_val=4",
        "data.batch_size=2", "module.val_generate_pages=2", "module.val_max_new_tokens=8",
    ]  # fmt: skip
    assert main(args) == 0
    for name in ("causal_flow", "deepencoder", "intervention_shuffle"):
        record = json.loads((results / "runs" / name / "seed0.json").read_text())
        assert record["n_pages"] == 4 and len(record["pages"]) == 4
        assert 0 <= record["evaluation"]["reading_order_edit"] <= 1
    assert json.loads((results / "runs/causal_flow/seed0.json").read_text())["validation"]
    shuffled = json.loads((results / "runs/intervention_shuffle/seed0.json").read_text())
    assert shuffled["intervention"] == "shuffle"
    evaluation = json.loads(
        (work / "causal_flow/seed0/eval_intervention_shuffle/metrics.json").read_text()
    )
    assert evaluation["provenance"]["generation"]["intervention"] == {"name": "shuffle", "seed": 0}
    for name in ("table.md", "summary.json", "scores.png", "by_layout.png"):
        assert (results / name).stat().st_size > 0, name
    table = (results / "table.md").read_text()
    assert "`deepencoder`" in table and "baseline" in table and "1 column" in table
    heldout = json.loads((results / "heldout.json").read_text())
    assert heldout["n_pages"] == 4 and len(heldout["page_groups"]) == 4
    # a rerun finds every record and trains nothing
    stamps = {p: p.stat().st_mtime_ns for p in (results / "runs").rglob("*.json")}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in (results / "runs").rglob("*.json")} == stamps


def test_the_committed_grid_records_rebuild_the_committed_table_and_the_readmes(tmp_path) -> None:
    """docs/study/reading_order holds the grid's run records (python -m zoo.study reading_order,
    seeds 0-2, run on this project's 2-core machine); the table in that folder and in the
    README must be what those records give."""
    import shutil
    from pathlib import Path

    from zoo.studies.report import build_report

    committed = Path(__file__).resolve().parents[1] / "docs" / "study" / "reading_order"
    shutil.copy(committed / "heldout.json", tmp_path / "heldout.json")
    shutil.copytree(committed / "runs", tmp_path / "runs")
    summary = build_report(READING_ORDER, tmp_path)
    assert all(row["seeds"] == [0, 1, 2] for row in summary["systems"].values())
    table = (tmp_path / "table.md").read_text(encoding="utf-8")
    assert table == (committed / "table.md").read_text(encoding="utf-8")
    readme = (committed.parents[2] / "README.md").read_text(encoding="utf-8")
    assert table in readme
