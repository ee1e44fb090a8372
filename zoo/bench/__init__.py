"""``python -m zoo.bench``: the zoo against transformers' DeepSeek-OCR 2 on the same weights, and
against the machine's own limits. One module per suite; see ``zoo.bench.__main__``."""
