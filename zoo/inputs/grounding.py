"""The grounding output of the DeepSeek-OCR models: boxes in ``<|det|>`` tags, and drawing them.

With the ``<|grounding|>`` prompt the models write each block as
``<|ref|>label<|/ref|><|det|>[[x1, y1, x2, y2], ...]<|/det|>`` followed by its markdown. The
coordinates are normalised to 0..999 of the page width and height (the official repository's
``run_dpsk_ocr2_image.py`` maps ``x / 999 * width``), so they do not depend on the image size.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from PIL import Image, ImageDraw

GRID = 999  # the largest normalised coordinate
_REFERENCE = re.compile(r"<\|ref\|>(.*?)<\|/ref\|><\|det\|>(.*?)<\|/det\|>", re.DOTALL)
_PALETTE = (
    (220, 50, 47), (38, 139, 210), (133, 153, 0), (211, 54, 130), (42, 161, 152),
    (181, 137, 0), (108, 113, 196), (203, 75, 22),
)  # fmt: skip


@dataclass(frozen=True)
class GroundedBlock:
    """One ``<|ref|>`` reference: its label and its boxes in 0..999 page coordinates."""

    label: str
    boxes: tuple[tuple[float, float, float, float], ...]


def _boxes(text: str) -> tuple[tuple[float, float, float, float], ...] | None:
    """The boxes of a ``<|det|>`` payload, or None when it is not a list of 4-number lists."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(value, list | tuple):
        return None
    if len(value) == 4 and all(isinstance(v, int | float) for v in value):
        value = [value]  # a single box without the outer brackets
    boxes = []
    for box in value:
        if not (isinstance(box, list | tuple) and len(box) == 4):
            return None
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in box):
            return None
        boxes.append(tuple(float(v) for v in box))
    return tuple(boxes)


def parse_grounding(text: str) -> list[GroundedBlock]:
    """Every well-formed reference of a model answer, in order; malformed ones are left out."""
    blocks = []
    for label, payload in _REFERENCE.findall(text):
        boxes = _boxes(payload)
        if boxes:
            blocks.append(GroundedBlock(label.strip(), boxes))
    return blocks


def strip_grounding(text: str) -> str:
    """The markdown of a grounded answer: reference tags removed, the blocks' text kept."""
    return _REFERENCE.sub("", text).strip("\n") + ("\n" if text.strip() else "")


def to_pixels(
    box: tuple[float, float, float, float], width: int, height: int
) -> tuple[int, int, int, int]:
    """A 0..999 box in pixels of a ``width x height`` page, corners ordered and clipped."""
    x1, y1, x2, y2 = (
        round(min(max(value, 0.0), GRID) / GRID * size)
        for value, size in zip(box, (width, height, width, height), strict=True)
    )
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def draw_grounding(image: Image.Image, blocks: list[GroundedBlock]) -> Image.Image:
    """A copy of the page with each block's boxes shaded, outlined and labelled, one colour
    per label."""
    page = image.convert("RGB")
    colours: dict[str, tuple[int, int, int]] = {}
    boxes = [
        (block.label, colours.setdefault(block.label, _PALETTE[len(colours) % len(_PALETTE)]),
         to_pixels(box, *page.size))
        for block in blocks
        for box in block.boxes
    ]  # fmt: skip
    overlay = Image.new("RGBA", page.size, (0, 0, 0, 0))
    shade = ImageDraw.Draw(overlay)
    for _, colour, rect in boxes:
        shade.rectangle(rect, fill=(*colour, 40))
    page.paste(overlay, (0, 0), overlay)
    draw = ImageDraw.Draw(page)
    line = max(2, round(min(page.size) / 400))
    for label, colour, rect in boxes:
        draw.rectangle(rect, outline=colour, width=line)
        corner = draw.textbbox((rect[0], rect[1]), label)
        at = (rect[0], max(0, rect[1] - (corner[3] - corner[1]) - 2))
        draw.rectangle(draw.textbbox(at, label), fill=(255, 255, 255))
        draw.text(at, label, fill=colour)
    return page
