"""Data-loading workers that never outlive their parent.

PyTorch's workers notice a dead parent only between batches and can hang on a full result pipe,
so a killed evaluation (``kill -9``, an out-of-memory kill) left them running. On Linux the
kernel delivers SIGKILL to a worker as soon as the process that started it dies
(``prctl(PR_SET_PDEATHSIG)``); elsewhere PyTorch's own parent check remains.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class ExitWithParent:
    """A DataLoader ``worker_init_fn`` that makes each worker die with the process that built
    the loader, then seeds it as Lightning would (``seed_everything(workers=True)``), since a
    loader with a ``worker_init_fn`` of its own is not given Lightning's."""

    def __init__(self) -> None:
        self.parent = os.getpid()

    def __call__(self, worker_id: int) -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != self.parent:  # the parent died before the request took effect
                os._exit(1)
        if os.environ.get("PL_SEED_WORKERS") == "1":
            from lightning.fabric.utilities.seed import pl_worker_init_function

            pl_worker_init_function(worker_id)
