"""Checkpoint I/O: folder layouts (zoo, released, transformers), loading, saving, weight-name
conversion, and the weights a run starts from."""
