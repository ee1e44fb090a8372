"""Run a study grid: write the held-out pages once, then train and evaluate every (system,
seed) with ``zoo.train`` and ``zoo.evaluate`` in subprocesses, a few at a time, and keep one
small JSON record per finished run in the results folder.

Records make the study resumable and extensible: a run whose record exists is skipped, a run
interrupted mid-training resumes from its ``last.ckpt``, and an interrupted evaluation resumes
from the pages it wrote. Checkpoints and predictions stay in the work folder; only the records
(scores, per-page scores, wall times, the exact command) go to the results folder, which is
what a repository commits.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module

from zoo.data.synthetic_benchmark import write_synthetic_benchmark
from zoo.eval.provenance import zoo_provenance
from zoo.io.atomic import write_text_atomic
from zoo.model.config import to_plain
from zoo.studies.grid import Grid, Intervention, System
from zoo.studies.report import HELDOUT_RECORD

log = logging.getLogger(__name__)

# what a record keeps of a run's final validation (teacher-forced on the held-out pages)
VALIDATION_KEYS = ("val/loss", "val/image_reliance", "val/attention_on_image", "val/text_edit")
PAGE_KEYS = ("text_edit", "reading_order_edit")
TRAIN_TIMING = "study_train_time.json"


@dataclass(frozen=True)
class StudySettings:
    """How a grid is run: seeds, parallel jobs and threads per job, extra ``zoo.train``
    overrides for every run (e.g. ``trainer.max_steps=20`` for a smoke run), and the
    ``zoo.evaluate`` generation length."""

    seeds: tuple[int, ...] = (0, 1, 2)
    jobs: int = 2
    threads: int = 1
    train_overrides: tuple[str, ...] = ()
    max_new_tokens: int = 160
    eval_batch_size: int = 8


def run_record_path(results: Path, name: str, seed: int) -> Path:
    return results / "runs" / name / f"seed{seed}.json"


def _compose(overrides: Sequence[str]) -> Any:
    with initialize_config_module("configs", version_base="1.3"):
        return compose("train", overrides=list(overrides))


def write_heldout(grid: Grid, settings: StudySettings, work: Path, results: Path) -> Path:
    """Write the study's held-out pages (the validation stream of its experiment) as an
    OmniDocBench folder under ``work`` and record what they are in the results folder."""
    baseline = next(s for s in grid.systems if s.name == grid.baseline)
    data = _compose([*baseline.train_overrides(grid.experiment), *settings.train_overrides]).data
    if data.get("val_seed") is None:
        raise ValueError(
            f"experiment {grid.experiment!r} must fix data.val_seed: the held-out pages are "
            "its validation stream"
        )
    style = to_plain(data.style)
    root = work / "heldout"
    ground_truth = write_synthetic_benchmark(
        root, int(data.val_seed), int(data.num_val), int(data.page_size), style
    )
    pages = {}
    for record in json.loads(ground_truth.read_text(encoding="utf-8")):
        attributes = record["page_info"]["page_attribute"]
        issues = [i for i in attributes["special_issue"] if i != "None"]
        pages[Path(record["page_info"]["image_path"]).stem] = [attributes["layout"], *issues]
    description = {
        "seed": int(data.val_seed),
        "n_pages": int(data.num_val),
        "page_size": int(data.page_size),
        "style": style,
        "page_groups": pages,
    }
    results.mkdir(parents=True, exist_ok=True)
    write_text_atomic(results / HELDOUT_RECORD, json.dumps(description, indent=1))
    return root


class StudyRunner:
    """Runs the units of one grid; a unit is one system and seed, plus the interventions
    evaluated on that system's weights."""

    def __init__(
        self, grid: Grid, settings: StudySettings, work: Path, results: Path, heldout: Path
    ) -> None:
        self.grid, self.settings = grid, settings
        self.work, self.results, self.heldout = work, results, heldout

    def _env(self) -> dict[str, str]:
        threads = str(self.settings.threads)
        return {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}

    def _run(self, args: list[str], log_path: Path) -> float:
        """Run ``python -m <args>`` with its output in ``log_path``; returns the wall time."""
        started = time.monotonic()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a", encoding="utf-8") as output:
            done = subprocess.run(
                [sys.executable, "-m", *args], stdout=output, stderr=subprocess.STDOUT,
                env=self._env(), check=False,
            )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}); see {log_path}")
        return time.monotonic() - started

    def train(self, system: System, seed: int) -> tuple[Path, list[str], float]:
        """Train (or finish training) one system; returns its run folder, overrides, wall time."""
        run_dir = self.work / system.name / f"seed{seed}"
        overrides = [
            *system.train_overrides(self.grid.experiment),
            f"seed={seed}",
            f"data.seed={seed}",
            *self.settings.train_overrides,
        ]
        timing = run_dir / TRAIN_TIMING
        if (run_dir / "metrics.json").is_file() and timing.is_file():
            return run_dir, overrides, json.loads(timing.read_text())["wall_s"]
        last = run_dir / "checkpoints" / "last.ckpt"
        resume = [f"ckpt_path={last}"] if last.is_file() else []
        args = ["zoo.train", *overrides, *resume, f"hydra.run.dir={run_dir}"]
        wall_s = self._run(args, run_dir / "train.log")
        # a run resumed after an interruption times its last part only, and says so
        write_text_atomic(timing, json.dumps({"wall_s": wall_s, "resumed": bool(resume)}))
        return run_dir, overrides, wall_s

    def evaluate(self, run_dir: Path, name: str, intervention: Intervention | None) -> Path:
        """Score the run's last checkpoint on the held-out folder (with an intervention)."""
        out = run_dir / f"eval_{name}"
        extra = [f"intervention={intervention.kind}"] if intervention else []
        args = [
            "zoo.evaluate",
            f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
            "data=omnidocbench",
            f"data.root={self.heldout}",
            f"data.batch_size={self.settings.eval_batch_size}",
            "data.num_workers=0",
            f"generation.max_new_tokens={self.settings.max_new_tokens}",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={out}",
            *extra,
        ]
        self._run(args, out / "evaluate.log")
        return out

    def record(
        self, name: str, seed: int, run_dir: Path, eval_dir: Path, overrides: list[str],
        train_s: float, intervention: Intervention | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """The run's record: overall and per-page scores, final validation, provenance."""
        metrics = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
        trained = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        with (eval_dir / "pages.csv").open(encoding="utf-8") as handle:
            pages = {
                Path(row["page"]).stem: {k: float(row[k]) for k in PAGE_KEYS if row[k] != ""}
                for row in csv.DictReader(handle)
            }
        record = {
            "system": name,
            "seed": seed,
            "train_overrides": overrides,
            "intervention": intervention.kind if intervention else None,
            "train_wall_s": round(train_s, 1),
            "validation": {k: trained[k] for k in VALIDATION_KEYS if k in trained},
            "evaluation": {k: metrics.get(k) for k in ("text_edit", "reading_order_edit")},
            "n_pages": metrics.get("n_pages"),
            "pages": pages,
            "zoo": {k: v for k, v in zoo_provenance().items() if k != "python"},
        }
        path = run_record_path(self.results, name, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(record, indent=1, sort_keys=True))
        return record

    def run_unit(self, system: System, seed: int) -> None:
        """Train, evaluate and record one system and seed, then its interventions."""
        interventions = [i for i in self.grid.interventions if i.system == system.name]
        pending = [
            i for i in interventions if not run_record_path(self.results, i.name, seed).is_file()
        ]
        if run_record_path(self.results, system.name, seed).is_file() and not pending:
            log.info("%s seed %d: recorded, skipped", system.name, seed)
            return
        log.info("%s seed %d: training", system.name, seed)
        run_dir, overrides, train_s = self.train(system, seed)
        if not run_record_path(self.results, system.name, seed).is_file():
            eval_dir = self.evaluate(run_dir, system.name, None)
            self.record(system.name, seed, run_dir, eval_dir, overrides, train_s)
        for intervention in pending:
            eval_dir = self.evaluate(run_dir, intervention.name, intervention)
            self.record(intervention.name, seed, run_dir, eval_dir, overrides, 0.0, intervention)
        log.info("%s seed %d: done", system.name, seed)

    def run(self) -> None:
        """Every unit, seed-major (each seed's grid completes before the next seed starts),
        ``jobs`` at a time; a failed unit is logged and the others go on."""
        units = [(s, seed) for seed in self.settings.seeds for s in self.grid.systems]
        failures = []
        with ThreadPoolExecutor(max_workers=self.settings.jobs) as pool:
            futures = {pool.submit(self.run_unit, s, seed): (s.name, seed) for s, seed in units}
            for future, (name, seed) in futures.items():
                try:
                    future.result()
                except RuntimeError as error:
                    log.error("%s seed %d failed: %s", name, seed, error)
                    failures.append(f"{name} seed {seed}")
        if failures:
            raise RuntimeError(f"{len(failures)} runs failed: {', '.join(failures)}")
