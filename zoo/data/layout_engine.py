"""The synthetic layout engine: pages whose reading order differs from their raster order.

A page has an optional header and footer, an optional full-width title, one to three text
columns and an optional shaded side bar. Columns are filled top to bottom with paragraphs,
section headings, figure boxes with captions, tables drawn as grids (caption above) and display
formulas (their LaTeX source drawn as text). Reading order goes down the first column, then the
next, then the side bar; a raster scan reads across the columns instead, which is what makes
reading order learnable and measurable.

The ground truth is the OmniDocBench JSON record (``layout_dets`` with category, polygon,
text / html / latex and reading order, ``page_info.page_attribute``) and the markdown built from
it by :func:`zoo.data.page_markdown.blocks_markdown`, so the two always agree. A page is
a pure function of ``(seed, index)`` and the style: every worker, rank and resumed run sees the
same data. Layout is planned first (cheap, no pixels) and painted in one pass, so token lengths
for bucketing come from :func:`plan_page` without rendering.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import PIL
from PIL import Image, ImageDraw, ImageFont

from zoo.data import synthetic_content as content
from zoo.data.page_markdown import blocks_markdown
from zoo.data.synthetic_content import GLYPH_ALPHABET

# Fonts already on the machine: the system's DejaVu, else the copy matplotlib ships, else
# Pillow's built-in font. Nothing is downloaded.
_FONT_DIRS = (
    Path("/usr/share/fonts/truetype/dejavu"),
    Path(PIL.__file__).parent.parent / "matplotlib" / "mpl-data" / "fonts" / "ttf",
)
_FONT_FILES = {
    "sans": "DejaVuSans.ttf",
    "serif": "DejaVuSerif.ttf",
    "sans_bold": "DejaVuSans-Bold.ttf",
    "serif_bold": "DejaVuSerif-Bold.ttf",
}
LAYOUT_NAMES = {1: "single_column", 2: "double_column", 3: "three_column"}
CONTENT_KINDS = ("words", "glyph_words", "glyph_blocks")
LINE_SPACING = 1.3


@dataclass(frozen=True)
class LayoutStyle:
    """How dense and varied pages are. ``lines_per_column`` body lines fill a column's height,
    which sets the font size unless ``glyph_px`` gives it in pixels; a column or side bar is at
    least ``min_column_lines`` line heights wide (lower it for two columns of large type); the
    probabilities pick the page furniture and the block kinds; ``span_prob`` is the chance of a
    block spanning the columns halfway down a multi-column page (read after the columns above
    it, before those below).

    ``content`` is what the blocks say: ``words`` (English-like text), ``glyph_words`` (random
    strings of ``alphabet``, ``glyph_count`` symbols each, grouped as words and lines) or
    ``glyph_blocks`` (each block one such string). Glyph pages carry no language prior, so a
    model can only transcribe them by reading the image.

    The defaults give sparse pages (a few short blocks, about 130 characters of markdown) that
    tiny models learn on a CPU; :data:`DENSE_STYLE` gives full pages.
    """

    max_columns: int = 2
    lines_per_column: int = 12
    min_column_lines: int = 6
    max_blocks_per_column: int = 2
    paragraph_words: tuple[int, int] = (3, 12)
    header_prob: float = 0.3
    footer_prob: float = 0.3
    title_prob: float = 0.5
    sidebar_prob: float = 0.1
    section_prob: float = 0.15
    figure_prob: float = 0.1
    table_prob: float = 0.1
    formula_prob: float = 0.12
    span_prob: float = 0.0
    content: str = "words"
    alphabet: str = GLYPH_ALPHABET
    glyph_count: tuple[int, int] = (2, 5)
    glyph_px: int | None = None

    def __post_init__(self) -> None:
        if self.content not in CONTENT_KINDS:
            raise ValueError(
                f"content must be one of {', '.join(CONTENT_KINDS)}, got {self.content!r}"
            )
        if len(set(self.alphabet)) < 2 or any(c.isspace() for c in self.alphabet):
            raise ValueError(
                f"alphabet must hold at least 2 distinct non-space symbols, got {self.alphabet!r}"
            )
        if not 1 <= self.glyph_count[0] <= self.glyph_count[1]:
            raise ValueError(
                f"glyph_count must be (min, max) with 1 <= min <= max, got {self.glyph_count}"
            )
        if self.glyph_px is not None and self.glyph_px < 6:
            raise ValueError(f"glyph_px must be at least 6 pixels, got {self.glyph_px}")
        if not 1 <= self.max_columns <= 3:
            raise ValueError(f"max_columns must be 1, 2 or 3, got {self.max_columns}")
        if self.lines_per_column < 2 or self.min_column_lines < 1 or self.max_blocks_per_column < 1:
            raise ValueError(
                "lines_per_column must be >= 2, min_column_lines and max_blocks_per_column >= 1, "
                f"got {self.lines_per_column}, {self.min_column_lines} and "
                f"{self.max_blocks_per_column}"
            )
        low, high = self.paragraph_words
        if not 1 <= low <= high:
            raise ValueError(
                f"paragraph_words must be (min, max) with 1 <= min <= max, got {low, high}"
            )

    def text(self) -> content.WordText | content.GlyphText:
        """The source of the blocks' text for this style's ``content``."""
        if self.content == "words":
            return content.WordText()
        return content.GlyphText(
            self.alphabet, tuple(self.glyph_count), words=self.content == "glyph_words"
        )


# Full pages: up to three columns of long paragraphs and every kind of block and furniture.
DENSE_STYLE: dict[str, Any] = {
    "max_columns": 3,
    "lines_per_column": 40,
    "max_blocks_per_column": 12,
    "paragraph_words": (10, 60),
    "header_prob": 0.6,
    "footer_prob": 0.6,
    "title_prob": 0.8,
    "sidebar_prob": 0.25,
}


@lru_cache(maxsize=1)
def _font_paths() -> dict[str, Path | None]:
    found: dict[str, Path | None] = {}
    for kind, name in _FONT_FILES.items():
        found[kind] = next((d / name for d in _FONT_DIRS if (d / name).is_file()), None)
    return found


class Face:
    """A font at one pixel size with cached word widths and word bitmaps: wrapping measures
    words, painting pastes them, so FreeType renders each distinct word once."""

    MAX_CACHED_WORDS = 20_000

    def __init__(self, kind: str, size: int) -> None:
        path = _font_paths()[kind]
        self.font = ImageFont.truetype(str(path), size) if path else ImageFont.load_default(size)
        self.line_height = max(1, round(size * LINE_SPACING))
        self._widths: dict[str, float] = {}
        self._masks: dict[str, tuple[Image.Image, int, int]] = {}
        self.space = self.font.getlength(" ")

    def word_mask(self, word: str) -> tuple[Image.Image, int, int]:
        """The word's coverage bitmap and its offset from the text origin."""
        cached = self._masks.get(word)
        if cached is None:
            if len(self._masks) >= self.MAX_CACHED_WORDS:
                self._masks.clear()
            left, top, right, bottom = self.font.getbbox(word)
            mask = Image.new("L", (max(1, right - left), max(1, bottom - top)), 0)
            ImageDraw.Draw(mask).text((-left, -top), word, fill=255, font=self.font)
            cached = self._masks[word] = (mask, left, top)
        return cached

    def paste_line(self, image: Image.Image, x: float, y: float, line: str, ink: int) -> None:
        """Draw ``line`` word by word from cached bitmaps."""
        for word in line.split(" "):
            if word:
                mask, left, top = self.word_mask(word)
                image.paste(ink, (round(x) + left, round(y) + top), mask)
            x += self.word_width(word) + self.space

    def width(self, text: str) -> float:
        return self.font.getlength(text)

    def word_width(self, word: str) -> float:
        width = self._widths.get(word)
        if width is None:
            width = self._widths[word] = self.font.getlength(word)
        return width

    def wrap(self, words: list[str], max_width: float) -> list[str]:
        """Greedy lines of whole words no wider than ``max_width`` (a word wider than that is
        cut to fit, so no text leaves its column)."""
        lines, current, used = [], [], 0.0
        for word in words:
            width = self.word_width(word)
            if width > max_width:
                word = self.fit(word, max_width)
                if not word:
                    continue
                width = self.width(word)
            if current and used + self.space + width > max_width:
                lines.append(" ".join(current))
                current, used = [], 0.0
            used += width + (self.space if current else 0.0)
            current.append(word)
        if current:
            lines.append(" ".join(current))
        return lines

    def fit(self, text: str, max_width: float) -> str:
        """``text`` cut to the longest prefix no wider than ``max_width``."""
        while text and self.width(text) > max_width:
            text = text[:-1]
        return text


@lru_cache(maxsize=64)
def face(kind: str, size: int) -> Face:
    return Face(kind, size)


@dataclass
class PagePlan:
    """Everything about a page but its pixels: ground-truth blocks and the drawing operations."""

    size: int
    blocks: list[dict[str, Any]] = field(default_factory=list)
    texts: list[tuple[float, float, str, Face, int]] = field(default_factory=list)
    boxes: list[tuple[tuple[float, ...], int | None, int | None, int]] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def markdown(self) -> str:
        return blocks_markdown(self.blocks)


@dataclass(frozen=True)
class SyntheticPage:
    """One rendered page: RGB image, markdown in reading order, OmniDocBench blocks."""

    image: Image.Image
    markdown: str
    blocks: list[dict[str, Any]]
    attributes: dict[str, Any]
    name: str

    def omnidocbench_record(self, image_path: str | None = None) -> dict[str, Any]:
        """The page as one record of an OmniDocBench ground-truth JSON list."""
        width, height = self.image.size
        return {
            "layout_dets": self.blocks,
            "page_info": {
                "page_attribute": self.attributes,
                "page_no": 0,
                "height": height,
                "width": width,
                "image_path": image_path or f"{self.name}.png",
            },
            "extra": {"relation": []},
        }


class _Planner:
    """Lays out one page: places blocks in reading order and records what to draw."""

    def __init__(self, rng: random.Random, size: int, style: LayoutStyle) -> None:
        self.rng, self.style = rng, style
        self.plan = PagePlan(size)
        self.margin = round(size * 0.06)
        self.text = style.text()
        family = rng.choice(("sans", "serif"))
        body_size = style.glyph_px or max(
            6, round((size - 2 * self.margin) / (style.lines_per_column * 1.6))
        )
        self.body = face(family, body_size)
        self.bold = face(f"{family}_bold", round(body_size * 1.15))
        self.big = face(f"{family}_bold", round(body_size * 1.6))
        self.ink = rng.randint(0, 60)
        self.gap = round(self.body.line_height * 0.6)
        self.order = 0
        self.figures = self.tables = self.sections = 0

    # --- recording ---------------------------------------------------------------------------

    def add_block(self, category: str, box: tuple, ordered: bool = True, **fields: str) -> None:
        x0, y0, x1, y1 = (round(float(v), 1) for v in box)
        order = None
        if ordered:
            self.order += 1
            order = self.order
        self.plan.blocks.append(
            {
                "category_type": category,
                "poly": [x0, y0, x1, y0, x1, y1, x0, y1],
                "ignore": False,
                "order": order,
                "anno_id": len(self.plan.blocks),
                **fields,
            }
        )

    def draw_lines(
        self, lines: list[str], x0: float, y: float, width: float, font: Face, center=False
    ) -> tuple[float, float, float, float]:
        """Queue ``lines`` from ``(x0, y)``; returns their bounding box."""
        left, right = x0 + width, x0
        for k, line in enumerate(lines):
            line_width = font.width(line)
            x = x0 + (width - line_width) / 2 if center else x0
            self.plan.texts.append((x, y + k * font.line_height, line, font, self.ink))
            left, right = min(left, x), max(right, x + line_width)
        return left, y, right, y + len(lines) * font.line_height

    def text_block(
        self, category: str, text: str, x0, y, width, bottom, font, ordered=True, center=False
    ) -> float | None:
        """Wrap ``text`` into the column, keep the lines that fit above ``bottom``, record the
        block with exactly those words; returns the height used (None if no line fits)."""
        lines = font.wrap(text.split(), width)[: max(0, int((bottom - y) // font.line_height))]
        if not lines:
            return None
        box = self.draw_lines(lines, x0, y, width, font, center)
        self.add_block(category, box, ordered, text=" ".join(lines))
        return box[3] - y

    # --- page furniture ----------------------------------------------------------------------

    def header(self, top: float, left: float, right: float) -> float:
        """A running title on the left and the page number on the right, never touching."""
        font = self.body
        title = self.text.title(self.rng, 2, 5)
        number = str(self.rng.randint(1, 400))
        number_left = right - font.width(number)
        room = min((right - left) * 0.7, number_left - font.space * 2 - left)
        text = font.fit(title, room)
        if text:
            box = self.draw_lines([text], left, top, right - left, font)
            self.add_block("header", box, ordered=False, text=text)
        box = self.draw_lines([number], number_left, top, font.width(number), font)
        self.add_block("page_number", box, ordered=False, text=number)
        rule = top + font.line_height + self.gap / 2
        self.plan.boxes.append(((left, rule, right, rule + 1), None, self.ink, 1))
        return rule + self.gap

    def footer(self, bottom: float, left: float, right: float) -> float:
        """An optional line of footer text on the left and the page number centred, never
        touching."""
        font, y = self.body, bottom - self.body.line_height
        line = self.text.line(self.rng, 3, 7) if self.rng.random() < 0.5 else ""
        number = str(self.rng.randint(1, 400))
        number_left = left + (right - left - font.width(number)) / 2
        text = font.fit(line, min((right - left) * 0.4, number_left - font.space * 2 - left))
        if text:
            box = self.draw_lines([text], left, y, right - left, font)
            self.add_block("footer", box, ordered=False, text=text)
        box = self.draw_lines([number], left, y, right - left, font, center=True)
        self.add_block("page_number", box, ordered=False, text=number)
        return y - self.gap

    # --- column blocks -----------------------------------------------------------------------

    def paragraph(self, x0, y, width, bottom) -> float | None:
        text = self.text.block(self.rng, self.rng.randint(*self.style.paragraph_words))
        return self.text_block("text_block", text, x0, y, width, bottom, self.body)

    def section(self, x0, y, width, bottom) -> float | None:
        self.sections += 1
        text = self.text.section(self.rng, self.sections)
        return self.text_block("title", text, x0, y, width, bottom, self.bold)

    def formula(self, x0, y, width, bottom) -> float | None:
        latex = content.formula(self.rng)
        lines = self.body.wrap(latex.split(), width * 0.9)
        if y + len(lines) * self.body.line_height > bottom:
            return None
        box = self.draw_lines(lines, x0, y, width, self.body, center=True)
        self.add_block("equation_isolated", box, latex=f"$$\n{latex}\n$$")
        return box[3] - y

    def figure(self, x0, y, width, bottom) -> float | None:
        height = min(width * self.rng.uniform(0.35, 0.7), self.plan.size * 0.3)
        caption = self.text.caption(self.rng, "Figure", self.figures + 1)
        lines = self.body.wrap(caption.split(), width)
        if y + height + self.gap / 2 + len(lines) * self.body.line_height > bottom:
            return None
        self.figures += 1
        box = (x0, y, x0 + width, y + height)
        self.plan.boxes.append((box, 250, self.ink, 1))
        self._chart(box)
        self.add_block("figure", box)
        caption_y = y + height + self.gap / 2
        caption_box = self.draw_lines(lines, x0, caption_y, width, self.body, center=True)
        self.add_block("figure_caption", caption_box, text=" ".join(lines))
        return caption_box[3] - y

    def _chart(self, box: tuple) -> None:
        """Bars of random heights inside the figure frame."""
        x0, y0, x1, y1 = box
        pad = (x1 - x0) * 0.08
        n_bars = self.rng.randint(3, 8)
        step = (x1 - x0 - 2 * pad) / n_bars
        for k in range(n_bars):
            top = y1 - pad - (y1 - y0 - 2 * pad) * self.rng.uniform(0.1, 1.0)
            bar = (x0 + pad + k * step + step * 0.15, top, x0 + pad + (k + 1) * step, y1 - pad)
            self.plan.boxes.append((bar, self.rng.randint(60, 200), None, 0))

    def table(self, x0, y, width, bottom) -> float | None:
        font = self.body
        n_cols = self.rng.randint(2, max(2, min(5, int(width // (font.line_height * 5)))))
        n_rows = self.rng.randint(2, 6)
        caption = self.text.caption(self.rng, "Table", self.tables + 1)
        caption_lines = font.wrap(caption.split(), width)
        row_height = font.line_height * 1.4
        grid_top = y + len(caption_lines) * font.line_height + self.gap / 2
        if grid_top + n_rows * row_height > bottom:
            return None
        self.tables += 1
        caption_box = self.draw_lines(caption_lines, x0, y, width, font, center=True)
        self.add_block("table_caption", caption_box, text=" ".join(caption_lines))
        cell_width = width / n_cols
        pad = font.line_height * 0.2
        cells = content.table_cells(self.rng, n_rows, n_cols)
        for r, row in enumerate(cells):
            top = grid_top + r * row_height
            for c, text in enumerate(row):
                row[c] = font.fit(text, cell_width - 2 * pad) or "0"
                text_y = top + (row_height - font.line_height) / 2
                self.plan.texts.append((x0 + c * cell_width + pad, text_y, row[c], font, self.ink))
        grid_bottom = grid_top + n_rows * row_height
        for r in range(n_rows + 1):
            line_y = grid_top + r * row_height
            self.plan.boxes.append(((x0, line_y, x0 + width, line_y + 1), None, self.ink, 1))
        for c in range(n_cols + 1):
            line_x = min(x0 + c * cell_width, x0 + width - 1)
            self.plan.boxes.append(((line_x, grid_top, line_x + 1, grid_bottom), None, self.ink, 1))
        self.add_block(
            "table", (x0, grid_top, x0 + width, grid_bottom), html=content.table_html(cells)
        )
        return grid_bottom - y

    def column(self, x0: float, x1: float, top: float, bottom: float) -> int:
        """Fill one column top to bottom; returns how many blocks it holds."""
        style, y, placed = self.style, top, 0
        kinds = (self.section, self.figure, self.table, self.formula)
        weights = (style.section_prob, style.figure_prob, style.table_prob, style.formula_prob)
        while placed < style.max_blocks_per_column and y + self.body.line_height <= bottom:
            roll, chosen = self.rng.random(), self.paragraph
            for kind, weight in zip(kinds, weights, strict=True):
                if roll < weight:
                    chosen = kind
                    break
                roll -= weight
            height = chosen(x0, y, x1 - x0, bottom)
            if height is None and chosen is not self.paragraph:
                height = self.paragraph(x0, y, x1 - x0, bottom)
            if height is None:
                break
            placed += 1
            y += height + self.gap
        return placed

    def sidebar(self, x0: float, x1: float, top: float, bottom: float) -> bool:
        """A shaded box with a small heading and a few paragraphs, read after the columns;
        False (nothing drawn) when the page furniture left no room for one line in it."""
        pad = self.gap
        height = (bottom - top) * self.rng.uniform(0.3, 0.8)
        if height < self.bold.line_height + 2 * pad:
            return False
        frame = (x0, top, x1, top + height)
        self.plan.boxes.append((frame, 232, None, 0))
        inner_x0, inner_x1, y = x0 + pad, x1 - pad, top + pad
        used = self.text_block(
            "title", self.text.title(self.rng, 1, 3), inner_x0, y, inner_x1 - inner_x0,
            frame[3] - pad, self.bold,
        )  # fmt: skip
        y += (used or 0) + self.gap
        for _ in range(self.rng.randint(1, 3)):
            used = self.paragraph(inner_x0, y, inner_x1 - inner_x0, frame[3] - pad)
            if used is None:
                break
            y += used + self.gap
        return True

    def page(self) -> PagePlan:
        rng, style, size = self.rng, self.style, self.plan.size
        left, right, top, bottom = self.margin, size - self.margin, self.margin, size - self.margin
        furniture = []
        if rng.random() < style.header_prob:
            top = self.header(top, left, right)
            furniture.append("header")
        if rng.random() < style.footer_prob:
            bottom = self.footer(bottom, left, right)
            furniture.append("footer")
        if rng.random() < style.title_prob:
            used = self.text_block(
                "title",
                self.text.title(rng),
                left,
                top,
                right - left,
                bottom,
                self.big,
                center=True,
            )
            top += (used or 0) + self.gap * 2
        main_left, main_right, side = left, right, None
        side_width = (right - left) * rng.uniform(0.22, 0.3)
        narrowest = self.body.line_height * style.min_column_lines
        if rng.random() < style.sidebar_prob and side_width > narrowest:
            if rng.random() < 0.5:
                side, main_left = (left, left + side_width), left + side_width + self.gap * 2
            else:
                side, main_right = (right - side_width, right), right - side_width - self.gap * 2
        gutter = self.gap * 2
        widest = int((main_right - main_left + gutter) // (narrowest + gutter))
        n_columns = rng.randint(1, max(1, min(style.max_columns, widest)))
        column_width = (main_right - main_left - gutter * (n_columns - 1)) / n_columns
        # no draw without spanning blocks: word pages stay those of earlier versions
        spanning = n_columns > 1 and style.span_prob > 0 and rng.random() < style.span_prob
        columns_top = top
        if spanning:
            middle = top + (bottom - top) * rng.uniform(0.3, 0.55)
            self.columns(n_columns, main_left, column_width, gutter, top, middle)
            used = self.paragraph(main_left, middle, main_right - main_left, bottom)
            top = middle + (used or 0) + self.gap * 2
        self.columns(n_columns, main_left, column_width, gutter, top, bottom)
        if side is not None and self.sidebar(*side, columns_top, bottom):
            furniture.append("sidebar")
        if spanning:
            furniture.append("spanning_block")
        self.plan.attributes = {
            "data_source": "synthetic",
            "language": "english" if style.content == "words" else "symbols",
            "layout": LAYOUT_NAMES[n_columns],
            "special_issue": furniture or ["None"],
        }
        return self.plan

    def columns(self, n: int, left: float, width: float, gutter: float, top, bottom) -> None:
        """Fill ``n`` columns of ``width`` side by side between ``top`` and ``bottom``."""
        for k in range(n):
            x0 = left + k * (width + gutter)
            self.column(x0, x0 + width, top, bottom)


def page_rng(seed: int, index: int) -> random.Random:
    """The random stream of page ``index`` of stream ``seed`` (independent of hash seeds)."""
    return random.Random(f"synthetic-page:{seed}:{index}")


def plan_page(seed: int, index: int, page_size: int = 1024, **style: Any) -> PagePlan:
    """Lay out page ``index`` of stream ``seed`` without painting it (ground truth, boxes)."""
    if page_size < 64:
        raise ValueError(f"page_size must be at least 64 pixels, got {page_size}")
    return _Planner(page_rng(seed, index), page_size, LayoutStyle(**style)).page()


def paint(plan: PagePlan) -> Image.Image:
    """Draw a planned page: boxes first, then text, in grey levels, returned as RGB."""
    image = Image.new("L", (plan.size, plan.size), 255)
    draw = ImageDraw.Draw(image)
    for box, fill, outline, width in plan.boxes:
        draw.rectangle(box, fill=fill, outline=outline, width=width)
    for x, y, text, font, ink in plan.texts:
        font.paste_line(image, x, y, text, ink)
    return image.convert("RGB")


def render_page(seed: int, index: int, page_size: int = 1024, **style: Any) -> SyntheticPage:
    """Render page ``index`` of the stream ``seed`` as a ``page_size`` square RGB page.

    ``style`` holds :class:`LayoutStyle` fields (``max_columns``, ``lines_per_column``, ...).
    """
    plan = plan_page(seed, index, page_size, **style)
    return SyntheticPage(
        image=paint(plan),
        markdown=plan.markdown,
        blocks=plan.blocks,
        attributes=plan.attributes,
        name=f"synthetic_{seed}_{index}",
    )


def synthetic_corpus(n_pages: int, seed: int = 0) -> list[str]:
    """The markdown of ``n_pages`` dense synthetic pages (laid out, not painted): a corpus."""
    return [plan_page(seed, index, **DENSE_STYLE).markdown for index in range(n_pages)]
