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


def reading_order(blocks: list[dict]) -> list[int]:
    """The reading-order numbers of the blocks that have one, in order."""
    return sorted(b["order"] for b in blocks if b["order"] is not None)


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
        assert raster_order(plan.blocks) != reading_order(plan.blocks)
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


GLYPH_STYLE = dict(
    max_columns=3, min_column_lines=2, max_blocks_per_column=3, header_prob=0.4,
    footer_prob=0.4, title_prob=0.3, sidebar_prob=0.3, span_prob=0.4, section_prob=0.0,
    figure_prob=0.2, table_prob=0.0, formula_prob=0.0, glyph_px=36,
)  # fmt: skip


@pytest.mark.parametrize("content", ["glyph_blocks", "glyph_words"])
def test_glyph_pages_have_valid_ground_truth_in_the_alphabet(content: str) -> None:
    alphabet = "0123456789"
    plans = []
    for index in range(40):
        plan = plan_page(5, index, 512, content=content, alphabet=alphabet, **GLYPH_STYLE)
        plans.append(plan)
        [page] = parse_ground_truth([record(plan)])
        orders = [b["order"] for b in page.blocks if b["order"] is not None]
        assert orders == list(range(1, len(orders) + 1))
        for block in plan.blocks:
            x0, y0, x1, _, _, y1, _, _ = block["poly"]
            assert 0 <= x0 <= x1 <= 512 and 0 <= y0 <= y1 <= 512, block
            text = block.get("text")
            if text:
                assert set(text) <= set(alphabet + " "), text
                if block["order"] is not None:
                    assert text in plan.markdown
        assert plan.attributes["language"] == "symbols"
    words = [b["text"] for p in plans for b in p.blocks if b["category_type"] == "text_block"]
    spaced = sum(" " in w for w in words)
    assert (spaced > len(words) / 4) if content == "glyph_words" else spaced == 0
    metrics = score(plans, [p.markdown for p in plans])  # the ground truth scores perfectly
    assert metrics["text_edit"] == 0 and metrics["reading_order_edit"] == 0


def test_glyph_pages_cover_every_layout_and_are_not_read_in_raster_order() -> None:
    plans = [plan_page(6, i, 512, content="glyph_blocks", **GLYPH_STYLE) for i in range(120)]
    layouts = {p.attributes["layout"] for p in plans}
    issues = {i for p in plans for i in p.attributes["special_issue"]}
    assert layouts == {"single_column", "double_column", "three_column"}
    assert {"header", "footer", "sidebar", "spanning_block"} <= issues
    assert any(b["category_type"] == "figure_caption" for p in plans for b in p.blocks)
    multi = [p for p in plans if p.attributes["layout"] != "single_column"]
    in_order = [
        raster_order(p.blocks) == sorted(b["order"] for b in p.blocks if b["order"]) for p in multi
    ]
    assert sum(in_order) < len(multi) / 2


@pytest.mark.parametrize("glyph_px", [56, 80, 112])
def test_no_two_blocks_overlap_even_in_large_type(glyph_px: int) -> None:
    """Large type crowds the header's title against its page number and the footer's text
    against the centred number; both are cut to leave a gap (at 112 px they overlapped on one
    page in five)."""
    style = {**GLYPH_STYLE, "glyph_px": glyph_px, "header_prob": 1.0, "footer_prob": 1.0}
    for index in range(60):
        plan = plan_page(8, index, 512, content="glyph_blocks", **style)
        boxes = [(b["category_type"], b["poly"]) for b in plan.blocks]
        for i, (kind, (x0, y0, x1, _, _, y1, _, _)) in enumerate(boxes):
            for other, (u0, v0, u1, _, _, v1, _, _) in boxes[i + 1 :]:
                overlap = min(x1, u1) - max(x0, u0) > 0 and min(y1, v1) - max(y0, v0) > 0
                assert not overlap, (glyph_px, index, kind, other)


def test_a_spanning_block_is_read_between_the_columns_above_and_below_it() -> None:
    for index in range(200):
        plan = plan_page(7, index, 512, content="glyph_blocks", **GLYPH_STYLE)
        if "spanning_block" in plan.attributes["special_issue"]:
            break
    else:
        pytest.fail("no page with a spanning block in 200")
    ordered = sorted((b for b in plan.blocks if b["order"]), key=lambda b: b["order"])
    widest = max(ordered, key=lambda b: b["poly"][2] - b["poly"][0])
    above = [b for b in ordered if b["poly"][5] <= widest["poly"][1]]
    below = [b for b in ordered if b["poly"][1] >= widest["poly"][5]]
    assert all(b["order"] < widest["order"] for b in above)
    assert all(b["order"] > widest["order"] for b in below)


def test_bad_glyph_style_is_named() -> None:
    with pytest.raises(ValueError, match="content must be one of"):
        LayoutStyle(content="runes")
    with pytest.raises(ValueError, match="alphabet"):
        LayoutStyle(content="glyph_blocks", alphabet="A")
    with pytest.raises(ValueError, match="glyph_count"):
        LayoutStyle(glyph_count=(3, 2))
    with pytest.raises(ValueError, match="glyph_px"):
        LayoutStyle(glyph_px=2)
