"""Reading and checking the OmniDocBench ground-truth JSON, and preparing a page's blocks."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Categories scored as text; the ignored ones are matched (so that a prediction of a page
# header does not count as extra text) but never scored.
TEXT_CATEGORIES = (
    "text_block", "title", "code_txt", "code_txt_caption", "reference", "equation_caption",
    "figure_caption", "figure_footnote", "table_caption", "table_footnote", "code_algorithm",
    "code_algorithm_caption", "header", "footer", "page_footnote", "page_number",
)  # fmt: skip
IGNORED_CATEGORIES = frozenset(
    {
        "figure_caption", "figure_footnote", "table_caption", "table_footnote",
        "code_algorithm", "code_algorithm_caption", "header", "footer", "page_footnote",
        "page_number", "equation_caption",
    }
)  # fmt: skip
FORMULA_CATEGORY = "equation_isolated"
TABLE_CATEGORY = "table"
# The nine page types of OmniDocBench v1.5 (the ``data_source`` page attribute).
PAGE_TYPES = (
    "book", "PPT2PDF", "research_report", "colorful_textbook", "exam_paper", "magazine",
    "academic_literature", "note", "newspaper",
)  # fmt: skip
_REQUIRED_FIELD = {
    **{category: "text" for category in TEXT_CATEGORIES},
    FORMULA_CATEGORY: "latex",
    TABLE_CATEGORY: "html",
}


class GroundTruthError(ValueError):
    """The ground-truth file does not have the OmniDocBench shape; names the first bad record."""


@dataclass
class GroundTruthPage:
    """One annotated page: its image name, page attributes and annotated blocks."""

    image_name: str
    attributes: dict[str, Any]
    blocks: list[dict[str, Any]]
    relations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The page name predictions are stored under: the image name without extension."""
        return Path(self.image_name).stem

    @property
    def page_type(self) -> str | None:
        return self.attributes.get("data_source")


def _record_problem(record: Any) -> str | None:
    """What is wrong with one page record, or None when it has the expected shape."""
    if not isinstance(record, dict):
        return f"expected an object with 'page_info' and 'layout_dets', got {type(record).__name__}"
    info = record.get("page_info")
    if not isinstance(info, dict) or not isinstance(info.get("image_path"), str):
        return "expected 'page_info' with a string 'image_path'"
    if not isinstance(info.get("page_attribute", {}), dict):
        return "expected 'page_info.page_attribute' to be an object"
    blocks = record.get("layout_dets")
    if not isinstance(blocks, list):
        return "expected 'layout_dets' to be a list of blocks"
    for index, block in enumerate(blocks):
        if not isinstance(block, dict) or not isinstance(block.get("category_type"), str):
            return f"layout_dets[{index}]: expected an object with a string 'category_type'"
        needed = _REQUIRED_FIELD.get(block["category_type"])
        if needed and not isinstance(block.get(needed), str):
            return f"layout_dets[{index}] ({block['category_type']}): expected a string {needed!r}"
        if not isinstance(block.get("order"), int | float | None):
            return f"layout_dets[{index}]: expected a number or null 'order'"
    extra = record.get("extra", {})
    relations = extra.get("relation", []) if isinstance(extra, dict) else None
    if not isinstance(relations, list) or not all(isinstance(r, dict) for r in relations):
        return "expected 'extra.relation' to be a list of objects"
    return None


def parse_ground_truth(records: Any, source: str = "ground truth") -> list[GroundTruthPage]:
    """Check every record and convert it; the error names the first bad record."""
    if not isinstance(records, list):
        raise GroundTruthError(
            f"{source}: expected a JSON list of pages, got {type(records).__name__}"
        )
    pages = []
    for index, record in enumerate(records):
        problem = _record_problem(record)
        if problem:
            image = (
                record.get("page_info", {}).get("image_path") if isinstance(record, dict) else None
            )
            label = f"record {index}" + (f" ({image})" if isinstance(image, str) else "")
            raise GroundTruthError(f"{source}: {label}: {problem}")
        info = record["page_info"]
        pages.append(
            GroundTruthPage(
                image_name=Path(info["image_path"]).name,
                attributes=dict(info.get("page_attribute", {})),
                blocks=record["layout_dets"],
                relations=record.get("extra", {}).get("relation", []),
            )
        )
    return pages


def load_ground_truth(path: Path | str) -> list[GroundTruthPage]:
    """Read an OmniDocBench JSON file (for example ``OmniDocBench.json``)."""
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise GroundTruthError(f"{path}: not valid JSON ({error})") from error
    return parse_ground_truth(records, str(path))


def select_pages(pages: list[GroundTruthPage], page_filter: dict | None) -> list[GroundTruthPage]:
    """Pages whose attributes equal every ``{attribute: value}`` of the filter (all if None).

    A list-valued attribute (``special_issue``) matches when it contains the value.
    """
    if not page_filter:
        return list(pages)

    def matches(page: GroundTruthPage) -> bool:
        for key, wanted in page_filter.items():
            value = page.attributes.get(key)
            if value != wanted and not (isinstance(value, list) and wanted in value):
                return False
        return True

    return [page for page in pages if matches(page)]


def _order_key(block: dict) -> float:
    return block.get("order") or 0


def page_blocks_by_category(page: GroundTruthPage) -> dict[str, list[dict]]:
    """The page's blocks by category, with blocks split by a ``truncated`` relation merged.

    As the official evaluator, relations sharing a block join one group, in which a block
    linked twice appears (and its text is repeated) twice; a merged block takes category and
    order of its first block in reading order.
    """
    groups: list[list] = []
    truncated_ids = set()
    for relation in page.relations:
        if relation.get("relation_type") != "truncated":
            continue
        pair = [relation.get("source_anno_id"), relation.get("target_anno_id")]
        truncated_ids.update(pair)
        joined = [group for group in groups if pair[0] in group or pair[1] in group]
        for group in joined:
            group.extend(pair)
        if not joined:
            groups.append(pair)

    by_category: dict[str, list[dict]] = {}
    truncated_blocks = {}
    for block in page.blocks:
        if block.get("anno_id") in truncated_ids:
            truncated_blocks[block.get("anno_id")] = block
        else:
            by_category.setdefault(block["category_type"], []).append(block)
    for group in groups:
        members = sorted(
            (truncated_blocks[anno_id] for anno_id in group if anno_id in truncated_blocks),
            key=_order_key,
        )
        if not members:
            continue
        first = members[0]
        merged = {
            "category_type": first["category_type"],
            "order": first.get("order"),
            "anno_id": first.get("anno_id"),
            "text": "".join(member.get("text", "") for member in members),
        }
        by_category.setdefault(first["category_type"], []).append(merged)
    return by_category


def sort_by_order(blocks: list[dict]) -> list[dict]:
    """Blocks in reading order (no order counts as 0; ties keep their order)."""
    return sorted(blocks, key=_order_key)
