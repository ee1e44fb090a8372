"""Split one page of predicted markdown into blocks: tables, display formulas, code, paragraphs.

The rules follow the official OmniDocBench v1.5 evaluator step by step (its quirks included,
each marked "as the official evaluator" below), since the blocks decide what is matched to
what. Extracted tables and formulas are blanked with spaces so later steps do not see them
again while character positions stay valid; positions order the blocks on the page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TEXT = "text_all"
FORMULA = "equation_isolated"
HTML_TABLE = "html_table"
LATEX_TABLE = "latex_table"
INLINE_FORMULA = "equation_inline"
MARKDOWN_TABLE = "md2html_table"


@dataclass
class Block:
    """One predicted block. ``category`` is text, display formula, HTML table or LaTeX table;
    ``fine_category`` refines it (inline formula, code, markdown table, text block)."""

    category: str
    start: int
    end: int
    content: str
    fine_category: str | None = None

    @property
    def kind(self) -> str:
        """The block type the matcher reports: the fine category when there is one."""
        return self.fine_category or self.category


_IMAGE = re.compile(r"!\[.*?\]\(.*?\)")
_FENCE_OPENINGS = tuple(
    re.compile(rf"^```{language}\n?", re.MULTILINE) for language in ("markdown", "html", "latex")
)
_FENCE_CLOSING = re.compile(r"```\n?$", re.MULTILINE)
_LATEX_TABLE_ENV = re.compile(r"\\begin{table}(.*?)\\end{table}", re.DOTALL)
_TABULAR_BEGIN = re.compile(r"\\begin{tabular}")
_TABULAR_END = re.compile(r"\\end{tabular}")
_HTML_TABLE_BEGIN = re.compile(r"<table(?:[^>]*)>")
_HTML_TABLE_END = re.compile(r"</table>")
# As the official evaluator: after a begin or end tag the scan moves on by a fixed step (the
# length of its end-pattern source: 14 for tabular, 8 for HTML), which is also where a block
# ends; an unclosed begin makes it rescan from 16 characters past that begin.
_TABULAR_STEP, _HTML_STEP, _RESCAN_OFFSET = 14, 8, 16
_DISPLAY_MATH = re.compile(r"\$\$(.*?)\$\$|\\\[(.*?)\\\]|\$(.*?)\$|\\\((.*?)\\\)", re.DOTALL)
_DOLLAR_MATH = re.compile(r"\$\$(.*?)\$\$|\$(.*?)\$|\\\((.*?)\\\)", re.DOTALL)
_MARKDOWN_ROW = re.compile(r"\|\s*.*?\s*\|\n", re.DOTALL)
_CONVERTED_TABLE = re.compile(r"(<table.*?</table>)", re.DOTALL)
_HTML_COMMENT = re.compile(r"<!--[\s\S]*?-->")
_TABLE_FRAGMENT = re.compile(r"<table>[\s\S]*?</table>")
_TABLE_FRAME_TAG = re.compile(r"</?t(able|head|body)>")
_CODE_BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)
_LATEX_STYLES = (
    (re.compile(r"\\title\{(.*?)\}"), r"\1"),
    (re.compile(r"\\title\s*\{\s*(.*?)\s*\}", re.DOTALL), r"\1"),
    (re.compile(r"\\text\s*\{\s*(.*?)\s*\}", re.DOTALL), r"\1"),
    (re.compile(r"\\section\*?\{(.*?)\}"), r"\1"),
    (re.compile(r"\\section\*?\{\s*(.*?)\s*\}", re.DOTALL), r"\1"),
)


def _blank(text: str, start: int, end: int) -> str:
    return text[:start] + " " * (end - start) + text[end:]


def _nested_spans(text: str, begin: re.Pattern, end: re.Pattern, step: int) -> list[tuple]:
    """(start, end) of every outermost begin ... end block, nesting respected."""
    spans, open_starts, position = [], [], 0
    while position < len(text):
        opening, closing = begin.search(text, position), end.search(text, position)
        if opening is None and closing is None:
            break
        if opening is not None and (closing is None or opening.start() < closing.start()):
            open_starts.append(opening.start())
            position = opening.start() + step
            continue
        if open_starts:
            start = open_starts.pop()
            if not open_starts:
                spans.append((start, closing.start() + step))
        position = closing.start() + step
    if open_starts:  # an unclosed begin: look again for complete blocks after it
        offset = open_starts[0] + _RESCAN_OFFSET
        inner = _nested_spans(text[offset:], begin, end, step)
        spans += [(start + offset, stop + offset) for start, stop in inner]
    return spans


def _latex_tables(content: str) -> list[tuple[int, str]]:
    """(start, source) of ``table`` environments, then of ``tabular`` blocks outside them."""
    tables = []
    for match in _LATEX_TABLE_ENV.finditer(content):
        tables.append((match.start(), match.group(0)))
        content = _blank(content, match.start(), match.end())
    spans = _nested_spans(content, _TABULAR_BEGIN, _TABULAR_END, _TABULAR_STEP)
    tables += [(start, content[start:stop]) for start, stop in spans]
    return sorted(tables, key=lambda table: table[0])


def _html_tables(content: str) -> list[tuple[int, str]]:
    spans = _nested_spans(content, _HTML_TABLE_BEGIN, _HTML_TABLE_END, _HTML_STEP)
    return [(start, content[start:stop]) for start, stop in spans]


def _extract_tables(content: str, tables: list[tuple], category: str, blocks: list) -> str:
    for start, table in tables:
        blocks.append(Block(category, start, start + len(table), table))
        content = _blank(content, start, start + len(table))
    return content


def _extract_display_math(content: str, blocks: list) -> str:
    """Formulas in ``$$``, ``\\[``, ``$`` or ``\\(`` delimiters become ``\\[...\\]`` blocks.

    As the official evaluator, ``$...$`` and ``\\(...\\)`` become inline-formula blocks that
    stay in the text as well; display formulas are blanked out of it.
    """
    for match in _DISPLAY_MATH.finditer(content):
        one_line = " ".join(match.group(0).strip().split("\n"))
        inner = _DOLLAR_MATH.search(one_line)
        start, end = match.start(), match.end()
        if inner is None:
            blocks.append(Block(FORMULA, start, end, one_line))
            content = _blank(content, start, end)
        elif inner.group(1):
            blocks.append(Block(FORMULA, start, end, _DOLLAR_MATH.sub(r"\\[\1\\]", one_line)))
            content = _blank(content, start, end)
        else:
            formula = _DOLLAR_MATH.sub(r"\\[\2\3\\]", one_line)
            blocks.append(Block(FORMULA, start, end, formula, INLINE_FORMULA))
    return content


def _markdown_row_to_html(rows_text: str) -> str:
    """One markdown match as an HTML table: first row the header, rows from the third on body."""
    rows = [row.strip() for row in rows_text.strip().split("\n")]
    header = [cell.strip() for cell in rows[0].split("|")[1:-1]]
    parts = ["<table>\n  <thead>\n    <tr>\n"]
    parts += [f"      <th>{cell}</th>\n" for cell in header]
    parts.append("    </tr>\n  </thead>\n  <tbody>\n")
    for row in rows[2:]:
        parts.append("    <tr>\n")
        parts += [f"      <td>{cell.strip()}</td>\n" for cell in row.split("|")[1:-1]]
        parts.append("    </tr>\n")
    parts.append("  </tbody>\n</table>\n")
    return "".join(parts)


def _is_alignment_line(line: str) -> bool:
    """A markdown separator row (any ``:`` or ``---``); as the official evaluator, table lines
    with a colon anywhere are dropped too."""
    return ":" in line or "---" in line


def _rows_of_tables(fragment: str) -> str:
    """Join the rows of the consecutive one-row tables in ``fragment`` into one table."""
    rows = []
    for table in _TABLE_FRAGMENT.findall(_HTML_COMMENT.sub("", fragment)):
        lines = [
            line.replace("<th>", "<td>").replace("</th>", "</td>") if "<th>" in line else line
            for line in table.split("\n")
        ]
        kept = [line for line in lines if not _TABLE_FRAME_TAG.search(line)]
        if len(kept) > 2:  # more than an empty <tr></tr>
            rows.extend(kept)
    return "\n\n<table>\n" + "\n".join(rows) + "\n</table>\n\n"


def _merge_adjacent_tables(text: str) -> str:
    """Merge runs of one-row tables into single tables, line by line one line behind.

    As the official evaluator, the line just before a table is swallowed by it (and lost).
    """
    output, fragment, in_table, previous = [], "", False, ""
    for line in text.split("\n"):
        if "<table>" in line:
            in_table = True
            fragment += previous
        elif in_table:
            if not _is_alignment_line(previous) and "</thead>" not in previous:
                fragment += "\n" + previous
            if "</table>" in previous:
                in_table = False
                output.append(_rows_of_tables(fragment))
                fragment = ""
        else:
            output.append(previous)
        previous = line
    if previous:
        if in_table or "</table>" in previous:
            output.append(_rows_of_tables(fragment + "\n" + previous))
        else:
            output.append(previous)
    return "\n".join(output)


def markdown_tables_to_html(content: str) -> str:
    """Rewrite pipe tables in ``content`` as HTML tables (the rest of the text is kept)."""
    content = content.replace("\r", "") + "\n"
    for rows_text in _MARKDOWN_ROW.findall(content):
        content = content.replace(rows_text, _markdown_row_to_html(rows_text), 1)
    content = _merge_adjacent_tables(content)
    return content.replace("<table>", '<table border="1" >').replace(
        "<td>", '<td colspan="1" rowspan="1">'
    )


def _extract_markdown_tables(content: str, blocks: list) -> str:
    if len(_MARKDOWN_ROW.findall(content + "\n")) < 2:
        return content
    content = markdown_tables_to_html(content)
    for match in _CONVERTED_TABLE.finditer(content):
        start, end = match.start(), match.end()
        blocks.append(Block(HTML_TABLE, start, end, match.group(0).strip(), MARKDOWN_TABLE))
        content = _blank(content, start, end)
    return content


def _extract_code(content: str, blocks: list) -> str:
    for match in _CODE_BLOCK.finditer(content):
        start, end = match.start(), match.end()
        blocks.append(Block(TEXT, start, end, match.group(2).strip(), "code"))
        content = _blank(content, start, end)
    return content


def _paragraph_blocks(content: str) -> list[Block]:
    """Blank-line separated paragraphs (single lines when there is no blank line).

    As the official evaluator, positions advance by the paragraph length only.
    """
    blocks, position = [], 0
    parts = content.split("\n\n")
    if len(parts) == 1:
        parts = content.split("\n")
    for part in parts:
        start, position = position, position + len(part)
        text = "\n".join(line.strip() for line in part.strip().split("\n") if line.strip())
        if not text:
            continue
        if text.startswith("<table") and text.endswith("</table>"):
            blocks.append(Block(HTML_TABLE, start, position, text))
        elif text.startswith("$") and text.endswith("$"):
            if text.replace("$", "").strip():
                blocks.append(Block(FORMULA, start, position, text))
        else:
            blocks.append(Block(TEXT, start, position, text, "text_block"))
    return blocks


def clean_markdown(content: str) -> str:
    """Drop images, code fences of markdown/html/latex, long runs of ``_`` or spaces and
    ``<html>``/``<body>`` wrappers."""
    content = _IMAGE.sub("", content)
    for opening in _FENCE_OPENINGS:
        content = opening.sub("", content)
    content = _FENCE_CLOSING.sub("", content)
    content = re.sub(r"_{4,}", "____", content)
    content = re.sub(r" {4,}", "    ", content)
    for wrapper in ("<html>", "</html>", "<body>", "</body>"):
        content = content.replace(wrapper, "")
    return content


def split_markdown(content: str) -> list[Block]:
    """All blocks of one page of markdown, ordered by their start position."""
    content = clean_markdown(content)
    blocks: list[Block] = []
    content = _extract_tables(content, _latex_tables(content), LATEX_TABLE, blocks)
    content = _extract_tables(content, _html_tables(content), HTML_TABLE, blocks)
    content = _extract_display_math(content, blocks)
    content = _extract_markdown_tables(content, blocks)
    content = _extract_code(content, blocks)
    for pattern, replacement in _LATEX_STYLES:
        content = pattern.sub(replacement, content)
    blocks += _paragraph_blocks(content)
    return sorted(blocks, key=lambda block: block.start)
