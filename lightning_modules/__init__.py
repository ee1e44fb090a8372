"""Lightning glue: the training module, datamodules (registered on import), metrics."""

from lightning_modules import synthetic_datamodule  # noqa: F401  (registers synthetic_pages)
