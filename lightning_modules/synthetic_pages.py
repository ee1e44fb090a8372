"""A minimal synthetic page generator: word columns whose reading order differs from raster order.

Each page is a title followed by one or two columns of short paragraphs. With two columns a
raster scan reads across both columns, while the markdown ground truth reads the left column
to the end first: the property that makes reading order learnable and measurable. Pages are
a pure function of ``(seed, index)``, so every worker and every resumed run sees the same data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

WORDS = (
    "the of and to in is that for on with as by from at are this be or an which it not "
    "model page text table figure layout order reading token vision encoder decoder query "
    "causal flow image column section result method data train test score edit distance "
    "document formula header footer caption paragraph number value line block visual"
).split()


@dataclass(frozen=True)
class SyntheticPage:
    """One rendered page and its ground-truth markdown in reading order."""

    image: Image.Image
    markdown: str


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _sentence(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def render_page(
    seed: int, index: int, page_size: int = 256, max_columns: int = 2, lines_per_column: int = 3
) -> SyntheticPage:
    """Render page ``index`` of the stream ``seed`` as a ``page_size`` square RGB image."""
    rng = random.Random(seed * 1_000_003 + index)
    n_columns = rng.randint(1, max_columns)
    font_size = max(8, page_size // 16)
    margin = page_size // 16
    image = Image.new("RGB", (page_size, page_size), "white")
    draw = ImageDraw.Draw(image)

    title = _sentence(rng, 2).capitalize()
    draw.text((margin, margin), title, fill="black", font=_font(int(font_size * 1.4)))
    blocks = [f"# {title}"]

    column_width = (page_size - 2 * margin) // n_columns
    chars_per_line = max(4, column_width // (font_size // 2 + 1))
    top = margin + int(font_size * 2.4)
    for column in range(n_columns):
        x = margin + column * column_width
        lines = []
        for row in range(rng.randint(1, lines_per_column)):
            line = _sentence(rng, rng.randint(1, 3))[:chars_per_line]
            lines.append(line)
            y = top + row * int(font_size * 1.3)
            draw.text((x, y), line, fill="black", font=_font(font_size))
        blocks.append(" ".join(lines))
    return SyntheticPage(image, "\n\n".join(blocks))
