"""Matching predicted blocks to ground-truth blocks, as the official v1.5 ``quick_match``.

Text and display formulas are matched together ("hybrid matching", so a formula written as
unicode text still finds its ground truth):

1. predictions close (edit distance < 0.25) to a block of an ignored category (headers,
   captions, page numbers, ...) are set aside with those blocks and never scored;
2. a ground-truth block without a close prediction may match a run of consecutive
   predictions that are its fragments (a paragraph the model split in several);
3. an optimal one-to-one assignment (Hungarian) on edit distance; pairs worse than 0.7 are
   undone;
4. a still unmatched ground-truth block joins a prediction that contains it (several short
   ground-truth blocks the model merged into one paragraph);
5. what is left is paired optimally once more, the rest stays unmatched.

Tables are matched one-to-one on the edit distance of their HTML; the cells of an unmatched
predicted table become text predictions.

Where the official code has quirks that change scores they are kept (marked "as the official
evaluator"), because the point of this module is to give the same numbers.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
from bs4 import BeautifulSoup
from scipy.optimize import linear_sum_assignment

from zoo.eval.omnidocbench.distance import (
    edit_distance_matrix,
    has_close_window,
    normalized_edit_distance,
)
from zoo.eval.omnidocbench.ground_truth import FORMULA_CATEGORY, IGNORED_CATEGORIES
from zoo.eval.omnidocbench.markdown_blocks import FORMULA, INLINE_FORMULA, TEXT, Block
from zoo.eval.omnidocbench.normalize import normalize_formula, normalize_text

CLOSE = 0.25  # a prediction this close to a block is taken as that block
UNMATCHED = 0.7  # an assigned pair farther apart than this is undone
FRAGMENT_OF_GT = 0.6  # a prediction this close to part of a ground-truth block is a fragment
GT_INSIDE_PREDICTION = 0.4  # a ground-truth block this close to part of a prediction is in it
# The official evaluator gives a page's matching 30 s and then falls back to a plain one-to-one
# assignment. A time limit scores a page differently on a slower machine, so the bound here is on
# the work instead, an upper bound of the sliding-window searches of steps 2 and 4: predicted
# times ground-truth characters, plus WINDOW_COST per window (each line slid along the other
# side's text). 1e9 (31k by 31k characters) is a few seconds; a 5 MB repetition loop on an
# ordinary page is far above it, a real page far below.
MATCH_WORK_LIMIT = 10**9
WINDOW_COST = 40  # one window costs about as much as comparing 40 more characters


@dataclass
class MatchedPair:
    """Ground-truth block(s) and the prediction(s) matched to them (empty when unmatched).

    ``gt_orders`` are the reading-order numbers of the ground-truth blocks (None when a block
    has none); ``pred_position`` is where the first prediction starts on the page.
    """

    gt: str
    pred: str
    norm_gt: str
    norm_pred: str
    gt_category: str
    pred_category: str = ""
    gt_orders: list = field(default_factory=list)
    pred_position: int | None = None


@dataclass
class TablePair:
    """A ground-truth table's HTML and the predicted HTML matched to it (``""`` if none)."""

    gt: str
    pred: str


# --- display-formula arrays ------------------------------------------------------------------

_ARRAY = re.compile(r"\\begin\{array\}\{(?P<spec>[^}]*)\}(?P<body>.*?)\\end\{array\}", re.DOTALL)
_ROW_BREAK = re.compile(r"\\\\")


def _one_column_array(latex: str) -> re.Match | None:
    """The ``array`` environment of ``latex`` when it has a single l, c or r column."""
    if "\\begin{array" not in latex:
        return None
    match = _ARRAY.search(latex)
    if match is None:
        return None
    spec = re.sub(r"\s+|\|", "", match.group("spec"))
    spec = re.sub(r"!{[^}]*}", "", re.sub(r"@{[^}]*}", "", spec))
    return match if spec in ("l", "c", "r") else None


def _array_rows(body: str) -> list[str]:
    return [row.strip() for row in _ROW_BREAK.split(body) if row.strip()]


def split_gt_formula_arrays(blocks: list[dict]) -> list[dict]:
    """A one-column ``array`` display formula becomes one formula per row (orders n.1, n.2...)."""
    result = []
    for block in blocks:
        match = None
        if block.get("category_type") == FORMULA_CATEGORY:
            match = _one_column_array(block.get("latex", ""))
        if match is None:
            result.append(block)
            continue
        order = float(block.get("order") or 0)
        for number, row in enumerate(_array_rows(match.group("body")), start=1):
            result.append(
                {**block, "latex": f"\\[{row}\\]", "order": round(order + number / 10, 1)}
            )
    return result


def split_pred_formula_arrays(blocks: list[Block]) -> list[Block]:
    """Predicted one-column ``array`` formulas become one formula block per row."""
    result = []
    for block in blocks:
        match = _one_column_array(block.content) if block.category == FORMULA else None
        if match is None:
            result.append(block)
            continue
        body, cursor = match.group("body"), 0
        body_start = block.start + match.start("body")
        for row in _array_rows(body):
            found = body.find(row, cursor)
            offset = cursor if found == -1 else found
            cursor = offset + len(row)
            start = body_start + offset
            result.append(
                replace(block, start=start, end=start + len(row) - 1, content=f"\\[{row}\\]")
            )
    return result


# --- the lines to match ----------------------------------------------------------------------


def _gt_line(block: dict) -> tuple[str, str]:
    if block["category_type"] == FORMULA_CATEGORY:
        latex = str(block.get("latex", ""))
        return latex, normalize_formula(latex)
    text = str(block.get("text", ""))
    return text, normalize_text(text)


def _pred_line(block: Block) -> tuple[str, str]:
    if block.category == TEXT:
        return block.content, normalize_text(block.content)
    if block.category == FORMULA:
        return block.content, normalize_formula(block.content)
    return block.content, block.content


def _gt_order(block: dict):
    return block.get("order") or None


def _as_array(lines: list[str]) -> str:
    rows = " \\\\ ".join("{" + line.strip("$").strip("\n") + "}" for line in lines)
    return "\\begin{array}{l} " + rows + " \\end{array}"


class _PageLines:
    """Raw and normalised lines of a page, empty ones dropped.

    As the official evaluator, line ``k`` takes its reading order and position
    from the ``k``-th block of the unfiltered list, so they shift after a dropped line.
    """

    def __init__(self, gt_blocks: list[dict], pred_blocks: list[Block]) -> None:
        self.gt_blocks, self.pred_blocks = gt_blocks, pred_blocks
        gt = [(*_gt_line(b), b["category_type"]) for b in gt_blocks]
        gt = [line for line in gt if line[0] and line[1]]
        self.gt_raw = [line[0] for line in gt]
        self.gt_norm = [line[1] for line in gt]
        self.gt_category = [line[2] for line in gt]
        pred = [line for line in map(_pred_line, pred_blocks) if line[0] and line[1]]
        self.pred_raw = [line[0] for line in pred]
        self.pred_norm = [line[1] for line in pred]

    def pair(self, gt_indices: list[int], pred_indices: list[int]) -> MatchedPair:
        """The matched pair of these ground-truth and predicted lines (page-wide indices)."""
        categories = Counter(self.gt_category[i] for i in gt_indices)
        category = categories.most_common(1)[0][0]
        if category == FORMULA_CATEGORY and len(gt_indices) > 1:
            gt = _as_array([self.gt_raw[i] for i in gt_indices])
        else:
            gt = "".join(self.gt_raw[i] for i in gt_indices)
        pair = MatchedPair(
            gt=gt,
            pred="",
            norm_gt="".join(self.gt_norm[i] for i in gt_indices),
            norm_pred="".join(self.pred_norm[j] for j in pred_indices),
            gt_category=category,
            gt_orders=[_gt_order(self.gt_blocks[i]) for i in gt_indices],
        )
        if pred_indices:
            first = self.pred_blocks[pred_indices[0]]
            pair.pred_category, pair.pred_position = first.kind, first.start
            raw = [self.pred_raw[j] for j in pred_indices]
            several_formulas = "equation" in first.kind and len(pred_indices) > 1
            pair.pred = _as_array(raw) if several_formulas else "".join(raw)
        return pair


# --- quick match -----------------------------------------------------------------------------


def _extends_fragments(gt: str, run: list[str]) -> tuple[bool, bool]:
    """Whether the last prediction of ``run`` continues the fragments before it within ``gt``,
    and whether the run may grow further (it is not longer than ``gt`` yet)."""
    before, joined = " ".join(run[:-1]), " ".join(run)
    if normalized_edit_distance(gt, joined) > normalized_edit_distance(gt, before):
        return False, False
    if not all(has_close_window(gt, piece, FRAGMENT_OF_GT, inclusive=True) for piece in run[:-1]):
        return False, False
    accepted = has_close_window(gt, run[-1], FRAGMENT_OF_GT, inclusive=False)
    return accepted, len(joined) <= len(gt)


def _fragment_runs(cost: np.ndarray, gt: list[str], pred: list[str]) -> list[tuple]:
    """For each ground-truth line without a close prediction: the best run of consecutive
    free predictions (each run grown while it gets closer) and its distance."""
    close = cost < CLOSE
    taken_gt = set(np.nonzero(close.any(axis=1))[0].tolist())
    taken_pred = set(np.nonzero(close.any(axis=0))[0].tolist())
    free_preds = [j for j in range(len(pred)) if j not in taken_pred]
    runs = []
    for i in range(len(gt)):
        if i in taken_gt:
            continue
        best = None
        for j in free_preds:
            length, run = 1, [pred[j]]
            while j + length < len(pred) and j + length not in taken_pred:
                run.append(pred[j + length])
                accepted, may_grow = _extends_fragments(gt[i], run)
                if not accepted:
                    break
                length += 1
                if not may_grow:
                    break
            distance = normalized_edit_distance(gt[i], " ".join(pred[j : j + length]))
            if best is None or distance < best[1]:
                best = (list(range(j, j + length)), distance)
        if best is not None:
            runs.append(best)
    return runs


def _overlaps(run: list[int], others) -> bool:
    return any(set(run) & set(other) for other, _ in others)


def _consistent_runs(runs: list[tuple]) -> list[list[int]]:
    """Non-overlapping runs: overlapping candidates compete as alternative sets, the set with
    the lowest mean distance wins."""
    groups: list[list[tuple]] = []
    for run in sorted(runs, key=lambda item: item[0][0]):
        if groups and _overlaps(run[0], groups[-1]):
            groups[-1].append(run)
        else:
            groups.append([run])
    chosen = []
    for group in groups:
        alternatives = [[group[0]]]
        for run, distance in group[1:]:
            placed = False
            for alternative in alternatives:
                same = [k for k, (other, _) in enumerate(alternative) if other == run]
                if same:
                    if alternative[same[0]][1] > distance:
                        alternative.pop(same[0])
                        alternative.append((run, distance))
                    placed = True
                elif not _overlaps(run, alternative):
                    alternative.append((run, distance))
                    placed = True
            if not placed:
                alternatives.append([(run, distance)])
        best, best_mean = [], float("inf")
        for alternative in alternatives:
            mean = sum(distance for _, distance in alternative) / len(alternative)
            if mean < best_mean:
                best, best_mean = alternative, mean
        chosen.extend(run for run, _ in best)
    return chosen


def _merge_fragments(cost: np.ndarray, gt: list[str], pred: list[str]) -> tuple[list, np.ndarray]:
    """Columns to assign: single predictions or runs of fragments, with their cost matrix."""
    runs = _consistent_runs(_fragment_runs(cost, gt, pred))
    if not runs:
        return list(range(len(pred))), cost
    columns: list = list(range(len(pred)))
    for run in runs:
        at = columns.index(run[0])
        columns[at : at + len(run)] = [run]
    lines = [" ".join(pred[c[0] : c[-1] + 1]) if isinstance(c, list) else pred[c] for c in columns]
    return columns, edit_distance_matrix(gt, lines)


def _quick_match(gt: list[str], pred: list[str]) -> list[tuple[list[int], list[int]]]:
    """(ground-truth lines, predicted lines) of every group, unmatched lines included with an
    empty partner list; predictions matching nothing are left out."""
    columns, cost = _merge_fragments(edit_distance_matrix(gt, pred), gt, pred)
    rows, cols = linear_sum_assignment(cost)
    assigned = {}
    unmatched_gt = sorted(set(range(len(gt))) - set(rows.tolist()))
    for i, c in zip(rows.tolist(), cols.tolist(), strict=True):
        column = columns[c]
        if cost[i, c] > UNMATCHED:
            unmatched_gt.append(i)
        else:
            assigned[i] = (
                list(range(column[0], column[-1] + 1)) if isinstance(column, list) else [column]
            )
    unmatched_gt.sort()

    containing = {}  # prediction -> unmatched ground-truth lines it contains
    for j, line in enumerate(pred):
        inside = [
            i for i in unmatched_gt if has_close_window(line, gt[i], GT_INSIDE_PREDICTION, False)
        ]
        if inside:
            containing[j] = inside

    groups: dict[tuple, list[int]] = {}
    grouped = set()
    for i, preds in assigned.items():
        groups.setdefault(tuple(sorted(preds)), []).append(i)
        grouped.add(i)
    for j, inside in containing.items():
        fresh = [i for i in inside if i not in grouped]
        groups.setdefault((j,), []).extend(fresh)
        grouped.update(fresh)

    pairs = [(i, key) for key, members in groups.items() for i in sorted(set(members))]
    # As the official evaluator, the leftovers are visited in Python set order.
    left_gt = set(range(len(gt))) - set().union(*[set(members) for members in groups.values()])
    left_pred = set(range(len(pred))) - {j for key in groups for j in key}
    if left_gt and left_pred:
        left_gt_list, left_pred_list = list(left_gt), list(left_pred)
        leftover_cost = [
            [normalized_edit_distance(gt[i], pred[j]) for j in left_pred_list] for i in left_gt_list
        ]
        for r, c in zip(*linear_sum_assignment(leftover_cost), strict=True):
            pairs.append((left_gt_list[r], (left_pred_list[c],)))

    result, seen_gt, seen_keys = [], set(), set()
    for _, key in pairs:
        if key in seen_keys:
            continue
        members = [other for other, other_key in pairs if other_key == key]
        result.append((members, list(key)))
        seen_keys.add(key)
        seen_gt.update(members)
    result += [([i], []) for i in range(len(gt)) if i not in seen_gt]
    return result


def _prediction_order(blocks: list[Block]) -> list[Block]:
    """By start position, inline formulas last (stable)."""
    return sorted(blocks, key=lambda block: (block.fine_category == INLINE_FORMULA, block.start))


def match_text_and_formulas(
    gt_blocks: list[dict], pred_blocks: list[Block]
) -> tuple[list[MatchedPair], bool]:
    """Match a page's text and display-formula blocks (ground truth in reading order) with its
    predicted text and formula blocks; returns the pairs of scored (not ignored) categories,
    and whether the page exceeded :data:`MATCH_WORK_LIMIT` and was matched one-to-one only."""
    lines = _PageLines(
        split_gt_formula_arrays(gt_blocks),
        split_pred_formula_arrays(_prediction_order(pred_blocks)),
    )
    n_gt, n_pred = len(lines.gt_norm), len(lines.pred_norm)
    gt_chars, pred_chars = sum(map(len, lines.gt_norm)), sum(map(len, lines.pred_norm))
    windows = pred_chars * n_gt + gt_chars * n_pred
    bounded = gt_chars * pred_chars + WINDOW_COST * windows > MATCH_WORK_LIMIT
    bounded = bounded and n_gt > 0 and n_pred > 0
    if n_gt == 0:
        pairs = []
    elif n_pred == 0:
        pairs = [lines.pair([i], []) for i in range(n_gt)]
    elif n_gt == 1 and n_pred == 1:
        pairs = [lines.pair([0], [0])]
    elif bounded:
        pairs = _match_one_to_one(lines)
    else:
        pairs = _match_scored_lines(lines)
    return [pair for pair in pairs if pair.gt_category not in IGNORED_CATEGORIES], bounded


def _match_one_to_one(lines: _PageLines) -> list[MatchedPair]:
    """The official fallback: every ground-truth line (ignored categories included) gets the
    prediction an optimal assignment on edit distance gives it, however far; no truncation,
    merging or setting aside."""
    cost = edit_distance_matrix(lines.gt_norm, lines.pred_norm)
    partner = dict(zip(*(axis.tolist() for axis in linear_sum_assignment(cost)), strict=True))
    return [lines.pair([i], [partner[i]] if i in partner else []) for i in range(len(cost))]


def _match_scored_lines(lines: _PageLines) -> list[MatchedPair]:
    ignored = [i for i, c in enumerate(lines.gt_category) if c in IGNORED_CATEGORIES]
    scored_gt = [i for i, c in enumerate(lines.gt_category) if c not in IGNORED_CATEGORIES]
    set_aside = set()
    if ignored:
        cost = edit_distance_matrix([lines.gt_norm[i] for i in ignored], lines.pred_norm)
        set_aside = set(np.nonzero((cost < CLOSE).any(axis=0))[0].tolist())
    scored_pred = [j for j in range(len(lines.pred_norm)) if j not in set_aside]
    groups = _quick_match(
        [lines.gt_norm[i] for i in scored_gt], [lines.pred_norm[j] for j in scored_pred]
    )
    return [
        lines.pair([scored_gt[i] for i in gt_group], [scored_pred[j] for j in pred_group])
        for gt_group, pred_group in groups
    ]


# --- tables ----------------------------------------------------------------------------------

_CDOT = re.compile(r"\$\\cdot\$")


def _cell_texts(table: str) -> list[str]:
    """Texts of the cells (``td``) that hold a single string."""
    cells = BeautifulSoup(table, "html.parser").find_all("td")
    return [_CDOT.sub("", cell.string).strip() for cell in cells if cell.string]


def match_tables(gt_tables: list[dict], pred_tables: list[Block], latex: bool) -> tuple:
    """One-to-one match of a page's ground-truth tables (in reading order) with its predicted
    tables on the edit distance of their source (HTML, or LaTeX when ``latex``).

    Returns the table pairs and, as text blocks, the cells of unmatched predicted tables. As
    the official evaluator, a table predicted in LaTeX is scored as an empty prediction.
    """
    source_key = "latex" if latex else "html"
    gt = [t for t in gt_tables if t.get("html") and t.get(source_key)]
    pred = [t for t in pred_tables if t.content]
    if not gt:
        return [], []
    if not pred:
        return [TablePair(t["html"], "") for t in gt], []
    cost = edit_distance_matrix([t[source_key] for t in gt], [t.content for t in pred])
    rows, cols = linear_sum_assignment(cost)
    partner = dict(zip(rows.tolist(), cols.tolist(), strict=True))
    pairs = [
        TablePair(t["html"], "" if latex or i not in partner else pred[partner[i]].content)
        for i, t in enumerate(gt)
    ]
    cells = [
        Block(TEXT, table.start, table.end, text, table.fine_category)
        for j, table in enumerate(pred)
        if j not in set(partner.values())
        for text in _cell_texts(table.content)
    ]
    return pairs, cells
