"""Repetition loops: a page whose output ran into the token limit or ends repeating itself.

Such a page is a decoding failure, not a reading error, and a mean edit distance hides it, so
every page is flagged (``pages.csv`` ``repetition_loop``) and the run counts them
(``n_repetition_loops``, ``repetition_loop_rate``). The token limit is known only to the run
that generated the page: ``zoo.evaluate`` records it in a folder beside the predictions folder,
``<predictions>.generation/<page>.json`` (:func:`write_generation_record`), outside the
folder of pages that other evaluators read. A loop is seen in the text itself, so any model's
predictions are checked (:func:`ends_in_loop`).
"""

from __future__ import annotations

import json
from pathlib import Path

from zoo.io.atomic import write_text_atomic

# A loop: the text ends with at least MIN_REPEATS copies of a unit of at most MAX_PERIOD
# characters, covering at least MIN_LOOP_CHARS (shorter runs, such as a row of dots or of
# empty cells, occur in real pages).
MIN_REPEATS = 3
MAX_PERIOD = 2000
MIN_LOOP_CHARS = 200
RECORDS_SUFFIX = ".generation"


def ends_in_loop(text: str) -> bool:
    """Whether ``text`` (trailing whitespace ignored) ends in a repeated unit, as above."""
    text = text.rstrip()
    for period in range(1, min(MAX_PERIOD, len(text) // MIN_REPEATS) + 1):
        span = max(period * MIN_REPEATS, MIN_LOOP_CHARS)
        if span > len(text):
            return False
        tail = text[-span:]
        if tail[period:] == tail[:-period]:  # the last ``span`` characters have this period
            return True
    return False


def record_path(markdown_path: Path) -> Path:
    """The generation record of ``<predictions>/<page>.md``."""
    folder = markdown_path.parent
    return folder.with_name(folder.name + RECORDS_SUFFIX) / f"{markdown_path.stem}.json"


def write_generation_record(markdown_path: Path, hit_token_limit: bool) -> Path:
    """Record whether the answer of a page's markdown ran into the token limit."""
    path = record_path(Path(markdown_path))
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps({"hit_token_limit": hit_token_limit}) + "\n")


def is_repetition_loop(markdown_path: Path | None, markdown: str) -> bool:
    """A page's flag: its generation record says it hit the token limit, or it ends in a loop."""
    if markdown_path is not None:
        record = record_path(markdown_path)
        if record.is_file():
            try:
                if json.loads(record.read_text(encoding="utf-8")).get("hit_token_limit"):
                    return True
            except (json.JSONDecodeError, AttributeError):
                pass  # a damaged record says nothing; the text is still checked
    return ends_in_loop(markdown)
