"""One page: split its predicted markdown, match it to the ground truth, keep what is scored."""

from __future__ import annotations

from dataclasses import dataclass, field

from zoo.eval.omnidocbench.ground_truth import (
    FORMULA_CATEGORY,
    TABLE_CATEGORY,
    TEXT_CATEGORIES,
    GroundTruthPage,
    page_blocks_by_category,
    sort_by_order,
)
from zoo.eval.omnidocbench.markdown_blocks import HTML_TABLE, LATEX_TABLE, split_markdown
from zoo.eval.omnidocbench.matching import (
    MatchedPair,
    TablePair,
    match_tables,
    match_text_and_formulas,
)

# Ground-truth categories matched as text or formula, in the order the official evaluator
# collects them before sorting by reading order (it breaks ties in the order).
_MATCHED_CATEGORIES = (*TEXT_CATEGORIES, FORMULA_CATEGORY)


@dataclass
class PageMatches:
    """What a page contributes to the scores: matched text, formulas, tables, reading order."""

    page: GroundTruthPage
    missing: bool
    text: list[MatchedPair] = field(default_factory=list)
    formulas: list[MatchedPair] = field(default_factory=list)
    tables: list[TablePair] = field(default_factory=list)
    reading_order: tuple[list, list] | None = None  # (ground-truth order, predicted order)
    repetition_loop: bool = False  # the output ran into the token limit or ends in a loop
    match_bounded: bool = False  # too long to match fully: matched one-to-one only


def reading_orders(text_pairs: list[MatchedPair]) -> tuple[list, list] | None:
    """The ground-truth reading order (sorted order numbers of the matched-or-not text blocks)
    and the predicted one (their order numbers sorted by where the prediction puts them).

    None when the page has neither.
    """
    with_order = [pair for pair in text_pairs if pair.gt_orders != [None]]
    placed = [pair for pair in with_order if pair.pred_position is not None]
    placed.sort(key=lambda pair: pair.pred_position)
    gt = sorted(order for pair in with_order for order in pair.gt_orders if order)
    pred = [order for pair in placed for order in pair.gt_orders if order]
    return (gt, pred) if gt or pred else None


def match_page(page: GroundTruthPage, markdown: str, missing: bool = False) -> PageMatches:
    """Match one page's predicted markdown (``""`` for a missing prediction) to its ground truth."""
    predicted = split_markdown(markdown)
    by_category = page_blocks_by_category(page)
    matches = PageMatches(page, missing)

    # Text and formula predictions grouped by category in order of first appearance, as the
    # official evaluator (this order breaks ties between equal positions).
    categories = dict.fromkeys(block.category for block in predicted)
    mixed = [
        block
        for category in categories
        if category not in (HTML_TABLE, LATEX_TABLE)
        for block in predicted
        if block.category == category
    ]
    if by_category.get(TABLE_CATEGORY):
        html = [block for block in predicted if block.category == HTML_TABLE]
        latex = [block for block in predicted if block.category == LATEX_TABLE]
        use_latex = len(latex) > len(html)
        matches.tables, cells = match_tables(
            sort_by_order(by_category[TABLE_CATEGORY]), latex if use_latex else html, use_latex
        )
        mixed += cells

    gt_blocks = sort_by_order(
        [block for category in _MATCHED_CATEGORIES for block in by_category.get(category, [])]
    )
    pairs, matches.match_bounded = match_text_and_formulas(gt_blocks, mixed)
    for pair in pairs:
        if pair.gt_category == FORMULA_CATEGORY:
            matches.formulas.append(pair)
        else:
            matches.text.append(pair)
    matches.reading_order = reading_orders(matches.text)
    return matches
