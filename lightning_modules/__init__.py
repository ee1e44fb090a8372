"""Lightning glue: the training module, datamodules (registered on import), metrics."""

from lightning_modules import (  # noqa: F401  (importing registers the datamodules)
    jsonl_datamodule,
    omnidocbench_datamodule,
    synthetic_datamodule,
)
