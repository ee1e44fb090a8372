"""``python -m zoo.evaluate``: OmniDocBench v1.5 scores of a folder of predictions, or of a model.

Score any model's per-page markdown::

    python -m zoo.evaluate predictions=DIR ground_truth=FILE.json

Run a model with Lightning (``Trainer.predict``, batched, progress bar) over an OmniDocBench
folder, writing each page's markdown as soon as its batch is done, then score::

    python -m zoo.evaluate ckpt_path=RUN.ckpt data=omnidocbench data.root=DIR
    python -m zoo.evaluate checkpoint=MODEL_DIR data=omnidocbench data.root=DIR \
        generation=official_v2

``generation=`` picks a decoding preset of ``configs/generation`` (``official_v2`` and
``official_v1`` are the authors' OmniDocBench recipes).

Pages that already have a ``.md`` in the predictions folder are not run again, so
``predictions=<the interrupted run's folder>`` resumes a run. The run directory receives
``metrics.json`` (with the run's provenance: ground truth, matching, generation settings,
checkpoint, zoo commit, wall time), ``pages.csv`` (one row per page) and, with
``pictures=true``, reading-order pictures, with ``report=true`` a browsable ``report.html``
(:mod:`zoo.eval.report`); the table of metrics is printed.
"""

from __future__ import annotations

import csv
import logging
import signal
import time
from pathlib import Path

import hydra
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from encoders.interventions import attach_intervention
from lightning_modules.predict_module import MarkdownWriter, OCRPredictModule, markdown_path
from lightning_modules.stop_on_sigterm import StopOnSigterm
from zoo.data.omnidocbench_pages import find_ground_truth, prediction_dataset
from zoo.data.page_datasets import ImagePredictionDataset, collate_predictions
from zoo.data.workers import ExitWithParent
from zoo.eval.comparison import compare
from zoo.eval.omnidocbench import PAGE_VALUES
from zoo.eval.prediction_run import claim_predictions, model_identity
from zoo.eval.predictions import format_table, score_predictions, write_metrics
from zoo.eval.provenance import checkpoint_fingerprint, zoo_provenance
from zoo.eval.reading_order_pictures import draw_pages
from zoo.io.atomic import atomic_path
from zoo.model.config import to_plain
from zoo.model.inference import GenerationSettings, load_inference_model

log = logging.getLogger(__name__)

PAGE_COLUMNS = (
    "page", "image", "page_type", "missing", *PAGE_VALUES, "n_text_blocks", "n_formulas",
    "n_tables", "match_bounded",
)  # fmt: skip


def write_page_records(records: list[dict], out_dir: Path) -> Path:
    """``pages.csv``: the scores of every page (empty cell: the page has nothing of a kind)."""
    path = Path(out_dir) / "pages.csv"
    with (
        atomic_path(path) as temporary,
        temporary.open("w", newline="", encoding="utf-8") as handle,
    ):
        writer = csv.DictWriter(handle, fieldnames=PAGE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
    return path


def _model_path(cfg: DictConfig) -> str | None:
    if cfg.ckpt_path and cfg.checkpoint:
        raise ValueError(
            f"ckpt_path={cfg.ckpt_path} and checkpoint={cfg.checkpoint}: give one model, "
            "a Lightning .ckpt (ckpt_path) or a checkpoint directory (checkpoint)"
        )
    return cfg.ckpt_path or cfg.checkpoint


def _benchmark(cfg: DictConfig) -> DictConfig:
    if cfg.get("data") is None or cfg.data.get("name") != "omnidocbench":
        raise ValueError(
            "a model needs the benchmark pages: add data=omnidocbench data.root=DIR "
            "(the folder with the OmniDocBench JSON and images/)"
        )
    return cfg.data


def page_filter_of(cfg: DictConfig) -> dict | None:
    """``page_filter``, else (when a benchmark folder is configured) ``data.page_filter``."""
    chosen = cfg.page_filter
    if chosen is None and cfg.get("data") is not None:
        chosen = cfg.data.get("page_filter")
    return to_plain(chosen)


def _intervention(cfg: DictConfig) -> dict:
    """The intervention of the run (recorded with its predictions), or nothing."""
    if not cfg.get("intervention"):
        return {}
    return {"intervention": {"name": cfg.intervention, "seed": int(cfg.intervention_seed)}}


def predict_pages(cfg: DictConfig, model_path: str, predictions: Path) -> int:
    """Transcribe every selected benchmark page without a ``.md`` in ``predictions``; returns
    the number of pages run."""
    data = _benchmark(cfg)
    settings = GenerationSettings.from_config(to_plain(cfg.generation))
    run = {
        "model": model_identity(model_path),
        "generation": settings.to_dict(),
        "precision": str(cfg.trainer.get("precision")),
        **_intervention(cfg),
    }
    claim_predictions(predictions, run, overwrite=bool(cfg.get("overwrite")))
    pages = prediction_dataset(data.root, data.ground_truth, data.images, page_filter_of(cfg))
    todo = [path for path in pages.paths if not markdown_path(predictions, path.name).exists()]
    log.info(
        "%d pages, %d already in %s, %d to run", len(pages), len(pages) - len(todo),
        predictions, len(todo),
    )  # fmt: skip
    if not todo:
        return 0
    model, processor = load_inference_model(
        model_path, to_plain(cfg.get("plugins")) or [], settings.quantize
    )
    if cfg.get("intervention"):
        attach_intervention(model.encoder, cfg.intervention, int(cfg.intervention_seed))
    module = OCRPredictModule(model, processor, settings)
    loader = DataLoader(
        ImagePredictionDataset(todo),
        batch_size=data.batch_size,
        num_workers=data.num_workers,
        collate_fn=collate_predictions,
        worker_init_fn=ExitWithParent(),
    )
    # the writer first: a SIGTERM stops the run after the batch in progress is written
    callbacks = [MarkdownWriter(predictions), StopOnSigterm()]
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks)
    try:
        trainer.predict(module, dataloaders=loader, return_predictions=False)
    except SIGTERMException:
        log.error(
            "stopped by SIGTERM; the pages written so far are kept in %s: run the same command "
            "again to resume", predictions,
        )  # fmt: skip
        raise SystemExit(128 + signal.SIGTERM) from None
    return len(todo)


def _ground_truth(cfg: DictConfig) -> Path:
    if cfg.ground_truth:
        return Path(cfg.ground_truth)
    if cfg.get("data") is not None and cfg.data.get("root"):
        return find_ground_truth(Path(cfg.data.root), cfg.data.get("ground_truth"))
    raise ValueError("ground_truth=FILE.json is needed (the OmniDocBench JSON to score against)")


def _images_dir(cfg: DictConfig, ground_truth: Path) -> Path:
    if cfg.images:
        return Path(cfg.images)
    if cfg.get("data") is not None and cfg.data.get("root"):
        return Path(cfg.data.root) / cfg.data.images
    return ground_truth.parent / "images"


def run_provenance(cfg: DictConfig, model_path: str | None, started: float) -> dict:
    """How the predictions were made (None: scored as given), the zoo, the wall time."""
    generation = None
    if model_path is not None:
        settings = GenerationSettings.from_config(to_plain(cfg.generation))
        generation = {
            **settings.to_dict(),
            "checkpoint": checkpoint_fingerprint(model_path),
            **_intervention(cfg),
        }
    return {
        "generation": generation,
        **zoo_provenance(),
        "wall_time_s": round(time.monotonic() - started, 3),
    }


def evaluate(cfg: DictConfig) -> dict:
    """Run the model when one is given, score the predictions, write and print the results."""
    started = time.monotonic()
    out_dir = Path(cfg.out_dir)
    model_path = _model_path(cfg)
    if model_path is None and not cfg.predictions:
        raise ValueError(
            "nothing to evaluate: give predictions=DIR (a folder of <page>.md), or a model "
            "(ckpt_path=RUN.ckpt or checkpoint=DIR) with data=omnidocbench data.root=DIR"
        )
    predictions = Path(cfg.predictions) if cfg.predictions else out_dir / "predictions"
    if model_path is not None:
        predict_pages(cfg, model_path, predictions)
    ground_truth = _ground_truth(cfg)
    metrics = score_predictions(predictions, ground_truth, page_filter_of(cfg))
    images = _images_dir(cfg, ground_truth)
    metrics["provenance"].update(run_provenance(cfg, model_path, started))
    metrics["provenance"]["images"] = str(images.resolve())
    write_metrics(metrics, out_dir)
    write_page_records(metrics["pages"], out_dir)
    if cfg.pictures:
        pictures = draw_pages(
            ground_truth,
            predictions,
            images,
            out_dir / "reading_order",
            page_filter=page_filter_of(cfg),
        )
        log.info("%d reading-order pictures in %s", len(pictures), out_dir / "reading_order")
    print(format_table(metrics))
    if cfg.report:
        report = compare([out_dir], out_dir, html=True, max_pages=cfg.report_max_pages)["html"]
        log.info("report: %s", report)
    print(f"\nresults in {out_dir}")
    return metrics


@hydra.main(version_base="1.3", config_path="pkg://configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
