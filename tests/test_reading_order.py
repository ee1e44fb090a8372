"""Reading-order pictures: the drawn sequences are the ones the metric compares."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.test_omnidocbench import DEMO, GT_FILE
from zoo.eval.omnidocbench import load_ground_truth
from zoo.eval.predictions import score_predictions
from zoo.eval.reading_order_pictures import (
    OTHER_STEP_COLOUR,
    SAME_STEP_COLOUR,
    boxes_by_order,
    draw_pages,
    draw_reading_order,
    page_reading_orders,
)
from zoo.reading_order import main

# A colorful_textbook page whose predicted order differs much from the ground truth.
SHUFFLED_PAGE = "jiaocaineedrop_jiaocai_needrop_en_3361"


@pytest.fixture
def demo(shared_dir: Path) -> Path:
    return shared_dir / DEMO


@pytest.fixture
def page(demo: Path):
    return next(p for p in load_ground_truth(demo / GT_FILE) if p.name == SHUFFLED_PAGE)


def _colours(image: Image.Image) -> set:
    return {colour for _, colour in image.getcolors(maxcolors=1 << 24)}


def test_boxes_come_from_the_annotated_polygons(page) -> None:
    boxes = boxes_by_order(page)
    block = next(b for b in page.blocks if b.get("order") == 1)
    xs, ys = block["poly"][0::2], block["poly"][1::2]
    assert boxes[1] == (min(xs), min(ys), max(xs), max(ys))


def test_sequences_and_distance_are_those_of_the_metric(demo: Path, page) -> None:
    predicted = (demo / "predictions_end2end" / f"{SHUFFLED_PAGE}.md").read_text("utf-8")
    orders = page_reading_orders(page, predicted)
    record = next(
        r
        for r in score_predictions(demo / "predictions_end2end", demo / GT_FILE)["pages"]
        if r["page"] == SHUFFLED_PAGE
    )
    assert orders.distance == pytest.approx(record["reading_order_edit"])
    assert orders.distance > 0.5 and len(orders.gt) > 20 and orders.pred != orders.gt

    perfect = page_reading_orders(page, (demo / "mds" / f"{SHUFFLED_PAGE}.md").read_text("utf-8"))
    assert perfect.distance == 0.0 and perfect.pred == perfect.gt


def test_picture_shows_both_orders_and_marks_wrong_steps(demo: Path, page) -> None:
    with Image.open(demo / "images" / page.image_name) as image:
        image.load()
        predicted = (demo / "predictions_end2end" / f"{SHUFFLED_PAGE}.md").read_text("utf-8")
        shuffled = draw_reading_order(image, page_reading_orders(page, predicted))
        perfect_md = (demo / "mds" / f"{SHUFFLED_PAGE}.md").read_text("utf-8")
        perfect = draw_reading_order(image, page_reading_orders(page, perfect_md))
    assert shuffled.width == 2 * image.width and shuffled.height > image.height
    right = shuffled.crop((image.width, 0, shuffled.width, shuffled.height))
    assert {OTHER_STEP_COLOUR, SAME_STEP_COLOUR} <= _colours(right)
    perfect_right = perfect.crop((image.width, 0, perfect.width, perfect.height))
    assert SAME_STEP_COLOUR in _colours(perfect_right) and OTHER_STEP_COLOUR not in _colours(
        perfect_right
    )


def test_pages_are_drawn_and_unreadable_images_skipped(demo: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / f"{SHUFFLED_PAGE}.jpg").write_bytes(b"broken")
    written = draw_pages(
        demo / GT_FILE,
        demo / "predictions_end2end",
        images,
        tmp_path / "out",
        [SHUFFLED_PAGE + ".jpg"],
    )
    assert written == []
    with pytest.raises(KeyError, match="not in"):
        draw_pages(demo / GT_FILE, demo, demo / "images", tmp_path / "out", ["nope.jpg"])

    page_image = demo / "images" / "yanbaopptmerge_SE05.pdf_7.jpg"
    status = main(
        [str(page_image), "--ground-truth", str(demo / GT_FILE)]
        + ["--predictions", str(demo / "predictions_end2end"), "--out", str(tmp_path / "cli")]
    )
    assert status == 0
    assert [p.name for p in (tmp_path / "cli").iterdir()] == ["yanbaopptmerge_SE05.pdf_7.png"]
