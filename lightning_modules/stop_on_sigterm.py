"""SIGTERM during ``Trainer.predict``: Lightning notes the signal but only its training and
validation loops act on it, so a prediction run went on to the end (and the scheduler then
killed it mid-batch). This callback stops after the batch in progress, whose pages the
prediction writer has already stored."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException


class StopOnSigterm(L.Callback):
    """Raise :class:`SIGTERMException` at the end of the first prediction batch after a SIGTERM;
    give it after the writer in the callback list, so that the batch is written first."""

    def on_predict_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.received_sigterm:
            raise SIGTERMException
