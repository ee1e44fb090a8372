"""A study's results from its run records: the comparison table (mean and 95% interval over
seeds, per system and, for the edit distances, per layout type), the paired tests against the
baseline, and PNG plots.

Everything here reads only the results folder (``heldout.json`` and ``runs/<system>/seed*.json``),
so the table is rebuilt, or extended by new runs, without retraining anything.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from zoo.io.atomic import write_text_atomic  # noqa: E402
from zoo.studies.grid import Grid  # noqa: E402
from zoo.studies.statistics import Interval, PairedTest, mean_interval, paired_tests  # noqa: E402

# the held-out folder's description, beside the run records (the runner writes it)
HELDOUT_RECORD = "heldout.json"

# (record field, column title): the table's scores, edit distances lower is better
SCORES = (
    ("reading_order_edit", "Reading-order edit"),
    ("text_edit", "Text edit"),
    ("image_reliance", "Image reliance (nats/token)"),
)
# the per-page scores: paired-tested, plotted and broken down by layout type (image reliance
# is one figure per run)
EDIT_SCORES = SCORES[:2]
SIGNIFICANCE = 0.05
GROUP_TITLES = {
    "single_column": "1 column",
    "double_column": "2 columns",
    "three_column": "3 columns",
    "sidebar": "side bar",
    "header": "header",
    "footer": "footer",
    "spanning_block": "spanning block",
}


def load_records(results: Path) -> dict[str, list[dict[str, Any]]]:
    """system -> its run records (one per seed), from ``results/runs``."""
    records: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in sorted((results / "runs").glob("*/seed*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        records[record["system"]].append(record)
    return dict(records)


def score(record: dict[str, Any], key: str) -> float | None:
    """One score of a run record (image reliance comes from its final validation)."""
    if key == "image_reliance":
        return None if record["intervention"] else record["validation"].get("val/image_reliance")
    return record["evaluation"].get(key)


def seed_intervals(records: Sequence[dict[str, Any]], key: str) -> Interval | None:
    values = [v for v in (score(r, key) for r in records) if v is not None]
    return mean_interval(values) if values else None


def per_page_means(records: Sequence[dict[str, Any]], key: str) -> dict[str, float]:
    """page -> the page's score averaged over the system's seeds."""
    sums: dict[str, list[float]] = defaultdict(list)
    for record in records:
        for page, values in record["pages"].items():
            if key in values:
                sums[page].append(values[key])
    return {page: sum(v) / len(v) for page, v in sums.items()}


def group_intervals(
    records: Sequence[dict[str, Any]], page_groups: dict[str, list[str]], key: str
) -> dict[str, Interval]:
    """layout group -> interval over seeds of the mean page score within the group."""
    per_group: dict[str, list[float]] = defaultdict(list)
    for record in records:
        scores: dict[str, list[float]] = defaultdict(list)
        for page, values in record["pages"].items():
            if key in values:
                for group in page_groups.get(page, []):
                    scores[group].append(values[key])
        for group, values in scores.items():
            per_group[group].append(sum(values) / len(values))
    return {group: mean_interval(values) for group, values in per_group.items()}


def _cell(interval: Interval | None) -> str:
    if interval is None:
        return "–"
    if interval.n == 1:
        return f"{interval.mean:.3f}"
    return f"{interval.mean:.3f} ± {interval.half_width:.3f}"


def _test_cell(test: PairedTest | None) -> str:
    if test is None:
        return "baseline"
    mark = " *" if test.p_holm < SIGNIFICANCE else ""
    return f"{test.mean_difference:+.3f} (p={test.p_holm:.2g}){mark}"


def build_report(grid: Grid, results: Path) -> dict[str, Any]:
    """Write ``table.md``, ``summary.json`` and the plots under ``results``; return the summary."""
    heldout = json.loads((results / HELDOUT_RECORD).read_text(encoding="utf-8"))
    records = load_records(results)
    systems = [name for name in grid.names if name in records]
    if not systems:
        raise FileNotFoundError(f"{results}: no run records under runs/; run the study first")
    summary: dict[str, Any] = {"systems": {}, "tests": {}, "baseline": grid.baseline}
    for name in systems:
        by_seed = sorted(records[name], key=lambda r: r["seed"])
        summary["systems"][name] = {
            "seeds": [r["seed"] for r in by_seed],
            "per_seed": {key: [score(r, key) for r in by_seed] for key, _ in SCORES},
            **{key: seed_intervals(records[name], key) for key, _ in SCORES},
            "groups": {
                key: group_intervals(records[name], heldout["page_groups"], key)
                for key, _ in EDIT_SCORES
            },
        }
    for key, _ in EDIT_SCORES:
        per_page = {name: per_page_means(records[name], key) for name in systems}
        summary["tests"][key] = (
            paired_tests(per_page, grid.baseline) if grid.baseline in per_page else {}
        )
    write_text_atomic(results / "table.md", format_table(grid, summary, heldout))
    plot_scores(summary, results / "scores.png")
    plot_groups(summary, results / "by_layout.png")
    write_text_atomic(results / "summary.json", json.dumps(_plain(summary), indent=1))
    return summary


def format_table(grid: Grid, summary: dict[str, Any], heldout: dict[str, Any]) -> str:
    """The markdown tables: overall scores with paired tests, then each edit distance per layout."""
    descriptions = {s.name: s.description for s in grid.systems} | {
        i.name: i.description for i in grid.interventions
    }
    lines = [
        f"Held-out pages: {heldout['n_pages']} pages of stream {heldout['seed']} "
        f"({heldout['page_size']} px, content {heldout['style'].get('content')}). Mean ± 95% "
        "t-interval over seeds; Δ vs the baseline: mean per-page difference, Wilcoxon "
        f"signed-rank p (Holm-adjusted), * = significant at {SIGNIFICANCE}.",
        "",
        "| system | seeds | " + " | ".join(title for _, title in SCORES)
        + " | Δ reading order vs baseline | Δ text vs baseline |",
        "|---|---|" + "---|" * (len(SCORES) + 2),
    ]  # fmt: skip
    tests = summary["tests"]
    for name, row in summary["systems"].items():
        cells = [_cell(row[key]) for key, _ in SCORES]
        deltas = [_test_cell(tests[key].get(name)) for key, _ in EDIT_SCORES]
        label = f"`{name}` ({descriptions.get(name, '')})"
        lines.append(f"| {label} | {len(row['seeds'])} | " + " | ".join(cells + deltas) + " |")
    groups = layout_groups(summary)
    counts: dict[str, int] = defaultdict(int)
    for page_groups in heldout["page_groups"].values():
        for group in page_groups:
            counts[group] += 1
    for key, title in EDIT_SCORES:
        lines += [
            "",
            f"{title} per layout type (pages of the type; a page can be of several):",
            "",
            "| system | " + " | ".join(f"{GROUP_TITLES[g]} ({counts[g]})" for g in groups) + " |",
            "|---|" + "---|" * len(groups),
        ]
        for name, row in summary["systems"].items():
            cells = [_cell(row["groups"][key].get(g)) for g in groups]
            lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_scores(summary: dict[str, Any], path: Path) -> None:
    """Bars of each edit distance per system with their 95% intervals, each seed a dot."""
    names = list(summary["systems"])
    figure, axes = plt.subplots(
        1, len(EDIT_SCORES), figsize=(6 * len(EDIT_SCORES), 0.5 * len(names) + 1.5)
    )
    for axis, (key, title) in zip(axes, EDIT_SCORES, strict=True):
        intervals = [summary["systems"][n][key] for n in names]
        means = [i.mean if i else 0.0 for i in intervals]
        errors = [i.half_width if i else 0.0 for i in intervals]
        axis.barh(names, means, xerr=errors, color="#a6bddb", capsize=3)
        for row, name in enumerate(names):
            seeds = [v for v in summary["systems"][name]["per_seed"][key] if v is not None]
            axis.plot(seeds, [row] * len(seeds), "o", color="#08306b", markersize=4)
        axis.invert_yaxis()
        axis.set_title(f"{title} (lower is better): mean, 95% CI, seeds")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def layout_groups(summary: dict[str, Any]) -> list[str]:
    """The layout types that occur in the held-out pages of any system, in table order."""
    present = {
        group
        for row in summary["systems"].values()
        for by_group in row["groups"].values()
        for group in by_group
    }
    return [g for g in GROUP_TITLES if g in present]


def plot_groups(summary: dict[str, Any], path: Path) -> None:
    """Each edit distance per layout type, one group of bars per system."""
    names = list(summary["systems"])
    groups = layout_groups(summary)
    width = 0.8 / max(1, len(groups))
    figure, axes = plt.subplots(
        len(EDIT_SCORES), 1, figsize=(1.4 * len(names) + 2, 4.5 * len(EDIT_SCORES))
    )
    for axis, (key, title) in zip(axes, EDIT_SCORES, strict=True):
        for k, group in enumerate(groups):
            intervals = [summary["systems"][n]["groups"][key].get(group) for n in names]
            axis.bar(
                [i + k * width for i in range(len(names))],
                [i.mean if i else 0.0 for i in intervals],
                width,
                yerr=[i.half_width if i else 0.0 for i in intervals],
                label=GROUP_TITLES[group],
                capsize=2,
            )
        axis.set_xticks([i + width * (len(groups) - 1) / 2 for i in range(len(names))], names)
        axis.tick_params(axis="x", rotation=30)
        axis.set_title(f"{title} by layout (lower is better), 95% CI")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plain(value: Any) -> Any:
    """``summary`` as JSON: intervals and tests become dicts."""
    if isinstance(value, Interval | PairedTest):
        return {k: getattr(value, k) for k in value.__dataclass_fields__}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
