"""TEDS: tree-edit-distance similarity of two HTML tables (Zhong et al., 2020).

TEDS = 1 - TED(pred, gt) / max(nodes), where renaming a cell costs the normalised edit
distance of its content tokens (0 or 1 for other nodes, 1 when spans differ). The
structure-only variant ignores cell content. Definitions as in the official evaluator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from apted import APTED, Config
from lxml import html as lxml_html

from zoo.eval.omnidocbench.distance import normalized_edit_distance

_PARSER = lxml_html.HTMLParser(remove_comments=True, encoding="utf-8")


@dataclass(eq=False)  # nodes are compared by identity in the tree algorithm
class TableNode:
    """A node of the table tree: a cell (``td``) keeps its spans and content tokens."""

    tag: str
    colspan: int | None = None
    rowspan: int | None = None
    content: list[str] = field(default_factory=list)
    children: list[TableNode] = field(default_factory=list)


class _CellCosts(Config):
    """Unit insert/delete; rename by tag, spans and (for cells) content edit distance."""

    def rename(self, node1: TableNode, node2: TableNode) -> float:
        if (node1.tag, node1.colspan, node1.rowspan) != (node2.tag, node2.colspan, node2.rowspan):
            return 1.0
        if node1.tag == "td" and (node1.content or node2.content):
            return normalized_edit_distance(node1.content, node2.content)
        return 0.0

    def children(self, node: TableNode) -> list[TableNode]:
        return node.children


def _cell_tokens(element, tokens: list[str]) -> None:
    """Tags as ``<tag>``/``</tag>`` tokens and text as single characters, depth first."""
    tokens.append(f"<{element.tag}>")
    if element.text is not None:
        tokens.extend(element.text)
    for child in element:
        _cell_tokens(child, tokens)
    if element.tag != "unk":
        tokens.append(f"</{element.tag}>")
    if element.tag != "td" and element.tail is not None:
        tokens.extend(element.tail)


def _table_tree(element, structure_only: bool) -> TableNode:
    if element.tag == "td":
        tokens: list[str] = []
        if not structure_only:
            _cell_tokens(element, tokens)
            tokens = tokens[1:-1]  # without the cell's own <td> and </td>
        return TableNode(
            "td",
            int(element.attrib.get("colspan", "1")),
            int(element.attrib.get("rowspan", "1")),
            tokens,
        )
    return TableNode(
        element.tag, children=[_table_tree(child, structure_only) for child in element]
    )


def teds(pred_html: str, gt_html: str, structure_only: bool = False) -> float:
    """TEDS of two ``<html><body><table>`` documents; 0 when either has no table or cannot
    be parsed (spans that are not integers, broken markup)."""
    if not pred_html or not gt_html:
        return 0.0
    try:
        pred_tables = lxml_html.fromstring(pred_html, parser=_PARSER).xpath("body/table")
        gt_tables = lxml_html.fromstring(gt_html, parser=_PARSER).xpath("body/table")
        if not pred_tables or not gt_tables:
            return 0.0
        pred, gt = pred_tables[0], gt_tables[0]
        n_nodes = max(len(pred.xpath(".//*")), len(gt.xpath(".//*")))
        pred_tree = _table_tree(pred, structure_only)
        gt_tree = _table_tree(gt, structure_only)
        distance = APTED(pred_tree, gt_tree, _CellCosts()).compute_edit_distance()
        return 1.0 - float(distance) / n_nodes
    except Exception:  # malformed HTML must never stop an evaluation: it scores 0
        return 0.0
