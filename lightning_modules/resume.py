"""Exact mid-epoch resume for dataloaders that keep no state of their own.

Lightning restores the model, optimizer, scheduler and loop counters from ``ckpt_path`` but
restarts a plain ``DataLoader`` at its first batch. A seeded run draws the same shuffled order
again (the sampler takes it from the seeded generator when the epoch's iterator is made), so
fetching and dropping the batches the interrupted run already trained on makes the resumed
run see exactly the batches the uninterrupted run saw. Dropped batches are loaded (not
trained on), which costs data-loading time only.
"""

from __future__ import annotations

import logging

import lightning as L

log = logging.getLogger(__name__)


class ResumeMidEpoch(L.Callback):
    """On a resume from a mid-epoch checkpoint, skip the batches already trained on."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        fit_loop = trainer.fit_loop
        done = fit_loop.epoch_loop.batch_progress.current.processed
        # Lightning made the epoch's iterator (and drew the shuffled order) in setup_data.
        fetcher = fit_loop._data_fetcher
        if not fit_loop.restarting or done == 0 or fetcher is None or fetcher.iterator is None:
            return
        log.info("resuming mid-epoch: skipping the %d batches already trained on", done)
        for _ in range(done):
            next(fetcher)
        # Lightning itself adds the restored batch count to the fetcher's counter.
        fetcher.fetched -= done
