"""``python -m zoo.bench`` smoke test: tiny models, one run each, valid JSON with the expected keys.

No timing is asserted here; speed claims live in the benchmark's own output.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from zoo.bench.__main__ import SUITES, format_table
from zoo.bench.context import comparison, meets
from zoo.bench.measure import Stats, peak_tensor_bytes
from zoo.bench.vision import count_flops
from zoo.layers import ThreadedLinear

ROOT = Path(__file__).resolve().parents[1]
SMOKE_SUITES = ["decode", "moe", "masks", "ablations", "machine"]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    output = tmp_path_factory.mktemp("bench") / "bench.json"
    command = [sys.executable, "-m", "zoo.bench", "--quick", *SMOKE_SUITES, "--output", output]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "ratio" in completed.stdout and str(output) in completed.stdout
    return json.loads(output.read_text())


def test_quick_run_writes_every_requested_suite(report):
    assert set(report) >= {"settings", "environment", "peak_memory_method", "suites"}
    assert report["settings"]["tiny"] and report["settings"]["repeats"] == 1
    assert list(report["suites"]) == [s for s in SUITES if s in SMOKE_SUITES]
    for suite in report["suites"].values():
        assert suite["rows"] and suite["wall_s"] > 0
        for row in suite["rows"]:
            assert {"case", "zoo"} <= set(row)
            assert {"median", "min", "max", "unit"} <= set(row["zoo"])


def test_comparison_rows_carry_both_sides_ratio_and_target(report):
    decode = report["suites"]["decode"]
    first = decode["rows"][0]
    assert first["transformers"]["runs"] == 1
    assert first["ratio"] == pytest.approx(first["zoo"]["median"] / first["transformers"]["median"])
    assert first["target"] == "<= 1.0" and isinstance(first["met"], bool)
    assert first["same_tokens"] is True  # same weights, greedy: same tokens on both sides
    assert decode["bytes_per_token"] > 0


def test_moe_and_machine_report_their_checks(report):
    moe = report["suites"]["moe"]
    assert isinstance(moe["no_loop_over_experts_or_tokens"], bool)
    assert set(moe["matmul_launches"]) == {"1", "64"}  # tokens dispatched in the quick run
    machine = report["suites"]["machine"]
    assert machine["matmul_gflops"] > 0 and machine["read_gbps"] > 0
    assert machine["decode_fraction_of_bandwidth_bound"] > 0  # decode ran in the same run
    assert machine["encoder_fraction_of_matmul_peak"] is None  # vision did not
    masks = report["suites"]["masks"]
    assert {"sdpa", "flex"} <= set(masks["backends"])


@pytest.mark.slow
def test_fullsize_runs_each_side_in_its_own_process_from_one_released_folder(tmp_path):
    """``fullsize`` on the reduced released layout (``--quick``): every row, both ratios' sides,
    the bandwidth rows and the evaluation estimate (the full-size run is the README's)."""
    output = tmp_path / "fullsize.json"
    command = [sys.executable, "-m", "zoo.bench", "--quick", "fullsize", "--output", output]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    suite = json.loads(output.read_text())["suites"]["fullsize"]
    cases = [row["case"] for row in suite["rows"]]
    assert sum(case.startswith("bf16 zoo vs transformers") for case in cases) == 5
    assert sum(case.startswith("int8 zoo vs bf16 zoo") for case in cases) == 5
    assert all(isinstance(row["ratio"], float) for row in suite["rows"][:-1])  # timings: noisy
    sides = suite["sides"]
    assert {side["side"] for side in sides.values()} == {"zoo", "transformers"}
    assert sides["zoo int8"]["weight_bytes"] < sides["zoo"]["weight_bytes"]
    assert len(sides["zoo"]["tokens"]) == suite["page_tokens"] == 8
    assert suite["same_tokens_zoo_vs_transformers"] > 0.5
    assert suite["omnidocbench_v15_hours_at_this_rate"]["zoo"] > 0
    assert suite["rounds"] == 1 and suite["later_rounds"]["zoo"] == []


def test_fullsize_pools_its_rounds_side_by_side():
    """Each round's decode time is its whole page less its own median page; pages, loads and
    peaks pool over the rounds."""
    from zoo.bench.fullsize import side_stats

    def result(pages, whole, load, rss_gib):
        return {
            "page_s": pages,
            "whole_page_s": whole,
            "load_s": load,
            "peak_rss": rss_gib * 2**30,
            "page_tokens": 5,
        }

    stats = side_stats([result([2.0, 4.0, 3.0], 11.0, 1.0, 4.0), result([5.0], 9.0, 3.0, 6.0)])
    decode = stats["decode"]  # (11 - 3) / 4 and (9 - 5) / 4 s per token
    assert (decode.min, decode.max, decode.runs, decode.unit) == (1000.0, 2000.0, 2, "ms/token")
    assert (stats["page"].median, stats["page"].runs) == (3.5, 4)
    assert (stats["whole"].min, stats["whole"].max) == (9.0, 11.0)
    assert stats["load"].median == 2.0 and (stats["rss"].min, stats["rss"].max) == (4.0, 6.0)


def test_targets_and_table():
    assert meets(0.9, "<= 1.0") and not meets(1.1, "<= 1.0") and meets(1.4, ">= 1.3")
    with pytest.raises(ValueError, match="target"):
        meets(1.0, "< 1")
    row = comparison("x", Stats.of([2.0, 1.0, 3.0], "s"), Stats.of([4.0], "s"), "<= 0.8")
    assert row["ratio"] == 0.5 and row["met"] is True
    table = format_table({"suite": {"rows": [row]}})
    assert "2 s [1-3]" in table and "0.50" in table and "<= 0.8 ok" in table


def test_peak_tensor_bytes_counts_live_tensors_of_the_call():
    import torch

    def allocate() -> None:
        a = torch.empty(1 << 20, dtype=torch.uint8)
        b = torch.empty(2 << 20, dtype=torch.uint8)
        del a
        c = torch.empty(1 << 20, dtype=torch.uint8)
        del b, c

    assert peak_tensor_bytes(allocate) == 3 << 20


def test_the_three_page_mask_builders_of_the_masks_suite_agree():
    """The masks suite times equal work: zoo, transformers and the row loop build one mask."""
    from zoo.bench.mask_building import (
        TINY_PAGE_CALLS,
        row_loop_page_masks,
        transformers_page_masks,
        zoo_page_masks,
    )

    for zoo, reference, loop in zip(
        zoo_page_masks(TINY_PAGE_CALLS),
        transformers_page_masks(TINY_PAGE_CALLS),
        row_loop_page_masks(TINY_PAGE_CALLS),
        strict=True,
    ):
        assert torch.equal((zoo == 0).expand_as(reference), reference)
        assert torch.equal(loop == 0, reference)


def test_the_transformers_twin_shares_weights_but_keeps_its_own_lm_head_layout():
    """Each side decodes with its own memory layout: the zoo's column-major head, transformers'
    contiguous one (as its loading stores it), with equal values."""
    from zoo.bench.context import BenchContext

    model, twin = BenchContext(tiny=True).pair("tiny")
    assert model.decoder.lm_head.weight.t().is_contiguous()
    assert twin.lm_head.weight.is_contiguous()
    assert torch.equal(twin.lm_head.weight, model.decoder.lm_head.weight)
    norm = model.decoder.norm.weight
    assert twin.model.language_model.norm.weight.data_ptr() == norm.data_ptr()


def test_the_ablations_suite_leaves_the_shared_decoder_as_it_found_it():
    """Later suites reuse the model: its own head and layer classes, eval mode and no
    gradients afterwards."""
    from zoo.bench import ablations
    from zoo.bench.context import BenchContext

    ctx = BenchContext(tiny=True, repeats=1, warmup=0)
    model, _ = ctx.pair("main")
    head = model.decoder.lm_head
    classes = [type(module) for module in model.decoder.modules()]
    rows = ablations.run(ctx)["rows"]
    assert len(rows) == 6 and all(row["ratio"] is not None for row in rows)
    assert model.decoder.lm_head is head and head.weight.t().is_contiguous()
    assert [type(module) for module in model.decoder.modules()] == classes
    assert ThreadedLinear in classes
    assert not model.decoder.training
    assert all(p.grad is None for p in model.decoder.parameters())


def test_flop_count_includes_attention_on_cpu():
    batch, heads, length, dim = 2, 3, 64, 16
    query, key, value = torch.randn(3, batch, heads, length, dim).unbind(0)
    mask = torch.randn(length, length)
    attention_flops = 4 * batch * heads * length * length * dim  # q k^T, then p v
    assert count_flops(lambda: F.scaled_dot_product_attention(query, key, value, mask)) == (
        attention_flops
    )
    assert count_flops(lambda: query @ key.transpose(-1, -2)) == attention_flops // 2
