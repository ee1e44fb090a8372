"""Synthetic layout engine: determinism, valid OmniDocBench ground truth, reading order that
differs from raster order, and markdown that our OmniDocBench evaluator scores as perfect."""

from __future__ import annotations

import json
import re

import pytest

from zoo.data.layout_engine import DENSE_STYLE, LayoutStyle, plan_page, render_page
from zoo.data.page_markdown import blocks_markdown, grounded_markdown
from zoo.eval.omnidocbench import match_page, page_records, parse_ground_truth, summarize

UNORDERED = {"header", "footer", "page_number"}


def record(plan, name: str = "page.png") -> dict:
    return {
        "layout_dets": plan.blocks,
        "page_info": {"page_attribute": plan.attributes, "image_path": name},
        "extra": {"relation": []},
    }


def test_pages_are_deterministic_by_seed_and_index() -> None:
    first, again = render_page(3, 5, page_size=512), render_page(3, 5, page_size=512)
    assert first.image.tobytes() == again.image.tobytes()
    assert (first.markdown, first.blocks) == (again.markdown, again.blocks)
    other = render_page(3, 6, page_size=512)
    assert other.markdown != first.markdown
    assert render_page(4, 5, page_size=512).markdown != first.markdown
    assert first.image.mode == "RGB" and first.image.size == (512, 512)


@pytest.mark.parametrize(("page_size", "style"), [(1024, DENSE_STYLE), (256, {})])
def test_ground_truth_is_valid(page_size: int, style: dict) -> None:
    for index in range(25):
        plan = plan_page(1, index, page_size, **style)
        json.dumps(record(plan))  # serialisable as the benchmark's JSON
        [page] = parse_ground_truth([record(plan)])  # the evaluator's own shape checks
        orders = [b["order"] for b in page.blocks if b["order"] is not None]
        assert orders == list(range(1, len(orders) + 1)), "unique, consecutive reading order"
        for block in page.blocks:
            x0, y0, x1, _, _, y1, _, _ = block["poly"]
            assert 0 <= x0 <= x1 <= page_size and 0 <= y0 <= y1 <= page_size, block
            text = block.get("text") or block.get("html") or block.get("latex")
            if block["category_type"] in UNORDERED:
                assert block["order"] is None
            elif text:
                assert text in plan.markdown, block
        assert plan.attributes["layout"] in ("single_column", "double_column", "three_column")


def test_every_kind_of_block_appears() -> None:
    categories = {
        b["category_type"] for i in range(30) for b in plan_page(2, i, **DENSE_STYLE).blocks
    }
    assert categories >= {
        "title", "text_block", "figure", "figure_caption", "table", "table_caption",
        "equation_isolated", "header", "footer", "page_number",
    }  # fmt: skip
    layouts = {plan_page(2, i, **DENSE_STYLE).attributes["layout"] for i in range(30)}
    assert layouts == {"single_column", "double_column", "three_column"}


def raster_order(blocks: list[dict]) -> list[int]:
    """Reading-order numbers as a top-to-bottom, left-to-right scan meets the blocks."""
    ordered = [b for b in blocks if b["order"] is not None]
    return [b["order"] for b in sorted(ordered, key=lambda b: (b["poly"][1], b["poly"][0]))]


def test_multi_column_reading_order_differs_from_raster_order() -> None:
    checked = 0
    for index in range(40):
        plan = plan_page(0, index, **DENSE_STYLE)
        if plan.attributes["layout"] == "single_column":
            continue
        body = [b for b in plan.blocks if b["order"] is not None]
        columns = {}
        for block in body:
            columns.setdefault(round(block["poly"][0] / 50), []).append(block)
        if len(columns) < 2 or max(len(c) for c in columns.values()) < 2:
            continue
        checked += 1
        assert raster_order(plan.blocks) != sorted(b["order"] for b in body)
    assert checked >= 5


def score(plans: list, markdowns: list[str]) -> dict:
    pages = parse_ground_truth([record(p, f"p{i}.png") for i, p in enumerate(plans)])
    return summarize(
        page_records([match_page(g, m) for g, m in zip(pages, markdowns, strict=True)])
    )


def test_our_evaluator_scores_the_engines_markdown_as_perfect() -> None:
    plans = [plan_page(11, i, **DENSE_STYLE) for i in range(16)]
    metrics = score(plans, [p.markdown for p in plans])
    assert metrics["text_edit"] == 0.0
    assert metrics["formula_edit"] == 0.0
    assert metrics["table_teds"] == 100.0 and metrics["table_edit"] == 0.0
    assert metrics["reading_order_edit"] == 0.0


def test_markdown_in_raster_order_is_penalised() -> None:
    """The check above can fail: the same blocks written in raster order lose reading order."""
    plans = [
        p
        for p in (plan_page(0, i, **DENSE_STYLE) for i in range(12))
        if p.attributes["layout"] != "single_column"
    ]
    scanned = []
    for plan in plans:
        by_order = {b["order"]: b for b in plan.blocks if b["order"] is not None}
        raster = [{**by_order[o], "order": k + 1} for k, o in enumerate(raster_order(plan.blocks))]
        scanned.append(blocks_markdown(raster))
    metrics = score(plans, scanned)
    assert metrics["reading_order_edit"] > 0.1
    assert metrics["text_edit"] == 0.0


def test_bad_style_is_named() -> None:
    with pytest.raises(ValueError, match="max_columns"):
        LayoutStyle(max_columns=4)
    with pytest.raises(ValueError, match="min_column_lines"):
        LayoutStyle(min_column_lines=0)
    with pytest.raises(TypeError):
        plan_page(0, 0, no_such_option=1)
    with pytest.raises(ValueError, match="page_size"):
        plan_page(0, 0, page_size=16)


GROUNDING_TAG = re.compile(
    r"<\|ref\|>(\w+)<\|/ref\|><\|det\|>\[\[(\d+), (\d+), (\d+), (\d+)\]\]<\|/det\|>\n"
)


def test_grounded_answer_is_the_markdown_with_labelled_boxes() -> None:
    plan = plan_page(0, 2, page_size=800, **DENSE_STYLE)
    grounded = grounded_markdown(plan.blocks, 800, 800)
    tags = GROUNDING_TAG.findall(grounded)
    ordered = sorted((b for b in plan.blocks if b["order"]), key=lambda b: b["order"])
    assert len(tags) == len(ordered)
    for (label, *box), block in zip(tags, ordered, strict=True):
        x0, y0, x1, _, _, y1, _, _ = block["poly"]
        expected = [round(v / 800 * 999) for v in (x0, y0, x1, y1)]
        assert [int(v) for v in box] == expected
        assert label == {"figure": "image", "text_block": "text"}.get(block["category_type"], label)
    plain = [part for part in GROUNDING_TAG.sub("", grounded).split("\n\n") if part]
    assert "\n\n".join(plain) == plan.markdown
