"""Page data: the synthetic layout engine and the page sources datamodules read."""
