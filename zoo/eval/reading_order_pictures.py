"""Pictures of reading order: the ground-truth order and the predicted one as numbered arrows
over the page, side by side.

The sequences are exactly those the reading-order edit distance compares
(:attr:`zoo.eval.omnidocbench.PageMatches.reading_order`): the scored text blocks of the ground
truth in annotated order, and the blocks a prediction matched in the order the prediction
writes them. Each block is drawn at its annotated box (``poly``). In the prediction panel an
arrow is green when the ground truth takes the same step, red otherwise.
``python -m zoo.reading_order`` draws them from the command line.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from zoo.data.page_datasets import UNREADABLE_IMAGE_ERRORS, open_page
from zoo.eval.omnidocbench import (
    GroundTruthPage,
    PageMatches,
    load_ground_truth,
    match_page,
    select_pages,
)
from zoo.eval.omnidocbench.distance import normalized_edit_distance
from zoo.eval.predictions import find_prediction

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
GT_COLOUR = (38, 139, 210)
SAME_STEP_COLOUR = (46, 160, 67)
OTHER_STEP_COLOUR = (220, 50, 47)


def _box_of(block: dict) -> Box | None:
    poly = block.get("poly")
    if not isinstance(poly, list) or len(poly) < 4 or len(poly) % 2:
        return None
    if not all(isinstance(v, int | float) for v in poly):
        return None
    xs, ys = poly[0::2], poly[1::2]
    return min(xs), min(ys), max(xs), max(ys)


def boxes_by_order(page: GroundTruthPage) -> dict[float, Box]:
    """The annotated box of each reading-order number (the first block that has it)."""
    boxes: dict[float, Box] = {}
    for block in page.blocks:
        order, box = block.get("order"), _box_of(block)
        if order is not None and box is not None:
            boxes.setdefault(order, box)
    return boxes


@dataclass
class ReadingOrders:
    """A page's ground-truth and predicted block sequences (boxes; blocks without a box are
    left out) and their reading-order edit distance (None when the page has no ordered text)."""

    gt: list[Box]
    pred: list[Box]
    distance: float | None


def page_reading_orders(page: GroundTruthPage, markdown: str) -> ReadingOrders:
    """The sequences the reading-order edit distance compares, located on the page."""
    return matched_reading_orders(match_page(page, markdown))


def matched_reading_orders(matches: PageMatches) -> ReadingOrders:
    """The reading orders of an already matched page (the report matches each page once for
    its pictures and its block diffs)."""
    page, orders = matches.page, matches.reading_order
    if orders is None:
        return ReadingOrders([], [], None)
    boxes = boxes_by_order(page)
    gt, pred = ([boxes[o] for o in sequence if o in boxes] for sequence in orders)
    return ReadingOrders(gt, pred, normalized_edit_distance(*orders))


def _centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _arrow(draw: ImageDraw.ImageDraw, start, end, colour, width: int, gap: float) -> None:
    """A straight arrow from ``start`` to ``end``, both ends pulled back by ``gap`` pixels."""
    dx, dy = end[0] - start[0], end[1] - start[1]
    length = math.hypot(dx, dy)
    if length <= 2 * gap:
        return
    ux, uy = dx / length, dy / length
    tail = (start[0] + ux * gap, start[1] + uy * gap)
    tip = (end[0] - ux * gap, end[1] - uy * gap)
    head = 3 * width + 4
    base = (tip[0] - ux * head, tip[1] - uy * head)
    draw.line([tail, base], fill=colour, width=width)
    side = (-uy * head / 2, ux * head / 2)
    draw.polygon(
        [tip, (base[0] + side[0], base[1] + side[1]), (base[0] - side[0], base[1] - side[1])],
        fill=colour,
    )


def _panel(
    image: Image.Image, boxes: list[Box], colours: list[tuple[int, int, int]], title: str
) -> Image.Image:
    """The page with the sequence's boxes, numbered in order and linked by arrows."""
    page = image.convert("RGB")
    draw = ImageDraw.Draw(page)
    scale = max(page.size) / 1000
    width, radius = max(2, round(3 * scale)), max(8, round(14 * scale))
    font = ImageFont.load_default(size=radius)
    for box in boxes:
        draw.rectangle(box, outline=(150, 150, 150), width=max(1, width // 2))
    centres = [_centre(box) for box in boxes]
    for step, colour in enumerate(colours):
        _arrow(draw, centres[step], centres[step + 1], colour, width, radius)
    for number, (x, y) in enumerate(centres, start=1):
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(255, 255, 255),
                     outline=(0, 0, 0), width=max(1, width // 2))  # fmt: skip
        draw.text((x, y), str(number), fill=(0, 0, 0), font=font, anchor="mm")
    header = Image.new("RGB", (page.width, 3 * radius), (255, 255, 255))
    ImageDraw.Draw(header).text((radius, radius // 2), title, fill=(0, 0, 0), font=font)
    framed = Image.new("RGB", (page.width, page.height + header.height), (255, 255, 255))
    framed.paste(header, (0, 0))
    framed.paste(page, (0, header.height))
    return framed


def ground_truth_panel(image: Image.Image, orders: ReadingOrders) -> Image.Image:
    """The page with the ground-truth reading order as numbered arrows."""
    gt = orders.gt
    return _panel(image, gt, [GT_COLOUR] * max(0, len(gt) - 1), "ground-truth reading order")


def predicted_panel(
    image: Image.Image, orders: ReadingOrders, title: str = "predicted reading order"
) -> Image.Image:
    """The page with the predicted reading order; an arrow is green where the ground truth
    takes the same step, red elsewhere. The edit distance is appended to ``title``."""
    gt, pred = orders.gt, orders.pred
    gt_steps = set(zip(gt, gt[1:], strict=False))
    pred_colours = [
        SAME_STEP_COLOUR if step in gt_steps else OTHER_STEP_COLOUR
        for step in zip(pred, pred[1:], strict=False)
    ]
    distance = "-" if orders.distance is None else f"{orders.distance:.3f}"
    return _panel(image, pred, pred_colours, f"{title} (edit distance {distance})")


def draw_reading_order(image: Image.Image, orders: ReadingOrders) -> Image.Image:
    """Ground truth (left) and prediction (right) over the page, as numbered arrows."""
    left, right = ground_truth_panel(image, orders), predicted_panel(image, orders)
    joined = Image.new("RGB", (left.width + right.width, left.height), (255, 255, 255))
    joined.paste(left, (0, 0))
    joined.paste(right, (left.width, 0))
    return joined


def draw_pages(
    ground_truth: Path | str,
    predictions_dir: Path | str,
    images_dir: Path | str,
    out_dir: Path | str,
    pages: Sequence[str] | None = None,
    page_filter: dict | None = None,
) -> list[Path]:
    """One ``<page>.png`` per ground-truth page (only the image names in ``pages`` when given);
    a page whose image cannot be read is logged and skipped. Returns the written files."""
    selected = select_pages(load_ground_truth(ground_truth), page_filter)
    if pages is not None:
        wanted = {Path(name).name for name in pages}
        unknown = wanted - {page.image_name for page in selected}
        if unknown:
            raise KeyError(f"pages {sorted(unknown)} are not in {ground_truth}")
        selected = [page for page in selected if page.image_name in wanted]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for page in selected:
        try:
            image = open_page(Path(images_dir) / page.image_name)  # upright, as the model saw it
            path = find_prediction(Path(predictions_dir), page.image_name)
            markdown = "" if path is None else path.read_text("utf-8", errors="replace")
            picture = draw_reading_order(image, page_reading_orders(page, markdown))
        except UNREADABLE_IMAGE_ERRORS as error:
            log.warning("skipping %s: %s", page.image_name, error)
            continue
        target = out_dir / f"{page.name}.png"
        picture.save(target)
        written.append(target)
    return written
