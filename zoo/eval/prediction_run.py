"""The run a folder of predictions belongs to: a model writes its pages into a folder together
with ``prediction_run.json`` (the model and the settings that shape its output), and a run that
resumes into the folder must be the same run, else pages of two models (or of two decoding
settings) would be scored as one."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from zoo.io.atomic import write_text_atomic

log = logging.getLogger(__name__)

RECORD_FILE = "prediction_run.json"
# What a model run leaves in its predictions folder: pages, pages being written (the temporary
# files of zoo.io.atomic), the record. ``overwrite`` removes these and nothing else.
RUN_FILE_PATTERNS = ("*.md", ".*.md.*.tmp", RECORD_FILE)


class MixedRunError(ValueError):
    """A resume into a predictions folder written by another model or with other settings."""


def model_identity(model_path: Path | str) -> dict[str, Any]:
    """The checkpoint's resolved path and the size and modification time of its files, so that
    another model, or the same path trained further, is told apart."""
    path = Path(model_path).resolve()
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    stats = {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()}
    return {"path": str(path), "files": stats}


def _differences(recorded: dict, current: dict) -> list[str]:
    keys = sorted(set(recorded) | set(current))
    return [
        f"{key}: recorded {recorded.get(key)!r}, now {current.get(key)!r}"
        for key in keys
        if recorded.get(key) != current.get(key)
    ]


def run_files(predictions: Path) -> list[Path]:
    """The files a model run wrote into ``predictions``."""
    return sorted({f for pattern in RUN_FILE_PATTERNS for f in predictions.glob(pattern)})


def claim_predictions(predictions: Path, run: dict[str, Any], overwrite: bool = False) -> None:
    """Make ``predictions`` the folder of ``run`` (a JSON-able description: model, settings).

    A folder recorded for the same run is resumed; one recorded for another run, or holding
    pages with no record, raises :class:`MixedRunError` naming both, unless ``overwrite``, which
    deletes the earlier run's files first.
    """
    predictions = Path(predictions)
    record = predictions / RECORD_FILE
    current = json.loads(json.dumps(run))  # as it reads back (tuples become lists)
    if overwrite:
        removed = run_files(predictions) if predictions.is_dir() else []
        for path in removed:
            path.unlink()
        if removed:
            log.info("overwrite=true: removed %d files of the earlier run", len(removed))
    elif record.is_file():
        try:
            recorded = json.loads(record.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise MixedRunError(
                f"{record}: not valid JSON ({error}); pass overwrite=true to start afresh"
            ) from None
        differences = _differences(recorded, current)
        if differences:
            raise MixedRunError(
                f"{predictions} holds the pages of another run; resuming would score two runs "
                f"as one. {'; '.join(differences)}. Use another out_dir (or predictions=DIR), "
                "or overwrite=true to delete those pages and start afresh"
            )
        return
    elif predictions.is_dir() and any(predictions.glob("*.md")):
        pages = len(list(predictions.glob("*.md")))
        raise MixedRunError(
            f"{predictions} holds {pages} pages but no {RECORD_FILE}, so which model wrote them "
            f"is unknown (this run: model {current.get('model', {}).get('path')}); use another "
            "out_dir (or predictions=DIR), or overwrite=true to delete those pages and start afresh"
        )
    predictions.mkdir(parents=True, exist_ok=True)
    write_text_atomic(record, json.dumps(current, indent=2, sort_keys=True) + "\n")
