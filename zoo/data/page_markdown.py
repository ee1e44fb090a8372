"""OmniDocBench blocks -> the page's markdown in reading order.

One function serves both the synthetic pages and the OmniDocBench folder, so a training target
is always written the way the evaluator reads it back: titles as ``#`` headings, display
formulas in ``$$`` fences, tables as HTML, blocks without a reading order (headers, footers,
page numbers, abandoned regions) and blocks without content (figures) left out. The grounded
form adds each block's label and box as DeepSeek-OCR's grounding prompt answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

TITLE = "title"
FORMULA = "equation_isolated"
TABLE = "table"
# OmniDocBench categories -> the labels of DeepSeek-OCR's grounding output (others: "text").
GROUNDING_LABELS = {
    "title": "title",
    "figure": "image",
    "figure_caption": "image_caption",
    "table": "table",
    "table_caption": "table_caption",
    "equation_isolated": "equation",
}


def block_markdown(block: Mapping[str, Any]) -> str:
    """The markdown of one block (``""`` when it has nothing to write)."""
    category = block["category_type"]
    if category == TABLE:
        return (block.get("html") or block.get("latex") or "").strip()
    if category == FORMULA:
        latex = (block.get("latex") or "").strip()
        if not latex or latex.startswith("$$"):
            return latex
        return f"$$\n{latex}\n$$"
    text = (block.get("text") or "").strip()
    if category == TITLE and text:
        return f"# {text}"
    return text


def _join_truncated(
    blocks: list[Mapping[str, Any]], relations: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Blocks (in reading order) with each chain of ``truncated`` relations (a paragraph split
    across columns or pages) joined into its first block, texts concatenated as the benchmark's
    own markdown does."""
    group_of: dict[Any, int] = {}
    for relation in relations:
        if relation.get("relation_type") != "truncated":
            continue
        ends = (relation.get("source_anno_id"), relation.get("target_anno_id"))
        groups = {group_of[e] for e in ends if e in group_of} or {len(group_of) + 1}
        target = min(groups)
        for anno_id, group in list(group_of.items()):
            if group in groups:
                group_of[anno_id] = target
        group_of.update(dict.fromkeys(ends, target))
    joined: list[Mapping[str, Any]] = []
    first_of_group: dict[int, int] = {}
    for block in blocks:
        group = group_of.get(block.get("anno_id"))
        if group is None:
            joined.append(block)
        elif group in first_of_group:
            head = joined[first_of_group[group]]
            joined[first_of_group[group]] = {**head, "text": head["text"] + block["text"]}
        else:
            first_of_group[group] = len(joined)
            joined.append({**block, "text": block.get("text") or ""})
    return joined


def reading_blocks(
    blocks: Iterable[Mapping[str, Any]], relations: Iterable[Mapping[str, Any]] = ()
) -> list[Mapping[str, Any]]:
    """The blocks that have a reading order, sorted by it, truncated ones joined.

    ``relations`` are the page's ``extra.relation`` records.
    """
    ordered = sorted(
        (b for b in blocks if b.get("order") is not None and not b.get("ignore")),
        key=lambda b: b["order"],
    )
    return _join_truncated(ordered, relations)


def blocks_markdown(
    blocks: Iterable[Mapping[str, Any]], relations: Iterable[Mapping[str, Any]] = ()
) -> str:
    """The page as blank-line separated markdown in reading order."""
    texts = map(block_markdown, reading_blocks(blocks, relations))
    return "\n\n".join(text for text in texts if text)


def grounded_markdown(
    blocks: Iterable[Mapping[str, Any]],
    width: int,
    height: int,
    relations: Iterable[Mapping[str, Any]] = (),
) -> str:
    """The page in the official grounding output form: each block in reading order as
    ``<|ref|>label<|/ref|><|det|>[[x0, y0, x1, y1]]<|/det|>`` (box on a 0-999 grid of the
    page) and a new line with its markdown; figures keep their box and have no text."""
    parts = []
    for block in reading_blocks(blocks, relations):
        label = GROUNDING_LABELS.get(block["category_type"], "text")
        xs, ys = block["poly"][0::2], block["poly"][1::2]
        box = [
            round(min(xs) / width * 999), round(min(ys) / height * 999),
            round(max(xs) / width * 999), round(max(ys) / height * 999),
        ]  # fmt: skip
        box = [min(999, max(0, v)) for v in box]
        parts.append(f"<|ref|>{label}<|/ref|><|det|>[{box}]<|/det|>\n{block_markdown(block)}")
    return "\n\n".join(parts)


TARGETS = ("markdown", "grounded")


def check_target(target: str) -> str:
    """``target`` when it is a known answer form, else an error naming the valid ones."""
    if target not in TARGETS:
        raise ValueError(f"target {target!r} is unknown; valid targets: {', '.join(TARGETS)}")
    return target


def page_answer(
    blocks: Iterable[Mapping[str, Any]],
    target: str,
    size: tuple[int, int],
    relations: Iterable[Mapping[str, Any]] = (),
) -> str:
    """A page's training answer: ``markdown``, or ``grounded`` (labels and boxes per block)."""
    if check_target(target) == "grounded":
        return grounded_markdown(blocks, *size, relations)
    return blocks_markdown(blocks, relations)
