"""Checkpoint I/O: folder layouts (zoo, released, transformers), loading, saving, weight-name conversion, run-start initialisation."""
