"""Random page content for the synthetic layout engine: sentences, titles, tables, formulas.

Everything is drawn from one ``random.Random``, so a page's content is a pure function of its
seed. The alphabet is chosen so that the OmniDocBench evaluator reads the markdown exactly as
the JSON: text has no ``$``, ``|``, ``\\`` or ``_``, table cells no markup characters, and
formulas no ``\\\\``, ``\\[`` or ``$``.
"""

from __future__ import annotations

import random

WORDS = tuple(
    """
    the of and to in is that for on with as by from at are this be or an which it not we our
    can each all these their has have was were more most than also only both between into over
    under after before when where while such other new first two three four five high low large
    small model models page pages text table figure layout order reading token tokens vision
    encoder decoder query queries causal flow image images column columns section result results
    method methods data train training test score scores edit distance document documents formula
    formulas header footer caption paragraph number value values line lines block blocks visual
    global local crop crops view views attention mask masks layer layers head heads weight weights
    loss rate step steps batch size length scale compression ratio accuracy error baseline
    benchmark evaluation experiment experiments analysis study approach system systems network
    feature features output input sequence sequences position positions learned learnable fixed
    dense sparse expert experts routing shared prefix suffix window patch patches grid resolution
    pixel pixels font fonts word words character characters language semantic spatial structure
    structures region regions box boxes reader readers natural logical raster scan left right top
    bottom shows show shown table figure compared improves improved reduces reduced uses used
    gives given follows following describes described reports reported observe observed
    """.split()
)
SECTION_NAMES = (
    "Introduction", "Related Work", "Method", "Experiments", "Results", "Discussion",
    "Conclusion", "Background", "Analysis", "Evaluation", "Data", "Training", "Ablations",
    "Limitations", "Overview", "Setup",
)  # fmt: skip
GREEK = (
    "\\alpha", "\\beta", "\\gamma", "\\delta", "\\lambda", "\\mu", "\\sigma", "\\theta",
    "\\phi", "\\omega", "\\epsilon", "\\tau",
)  # fmt: skip
LATIN = tuple("abcdfghkmnpqrstuvwxyzABCDEFGHKLMNPQRSTUVWXYZ")
OPERATORS = ("+", "-", "\\cdot", "\\times")
RELATIONS = ("=", "\\leq", "\\geq", "\\approx", "<", ">")
INDICES = ("i", "j", "k", "n", "t", "0", "1", "2")


def sentence(rng: random.Random, min_words: int, max_words: int) -> str:
    """A capitalised run of words ending with a full stop."""
    words = [rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words))]
    return " ".join(words).capitalize() + "."


def paragraph(rng: random.Random, n_words: int) -> str:
    """Sentences totalling about ``n_words`` words."""
    sentences, count = [], 0
    while count < n_words:
        length = min(rng.randint(4, 14), max(1, n_words - count))
        sentences.append(sentence(rng, length, length))
        count += length
    return " ".join(sentences)


def title(rng: random.Random, min_words: int = 2, max_words: int = 6) -> str:
    """A title-cased phrase, e.g. ``Visual Tokens Of Reading Order``."""
    return " ".join(
        rng.choice(WORDS).capitalize() for _ in range(rng.randint(min_words, max_words))
    )


def section_title(rng: random.Random, number: int) -> str:
    """A numbered section heading, sometimes with a subsection number."""
    name = rng.choice(SECTION_NAMES)
    if rng.random() < 0.4:
        return f"{number}.{rng.randint(1, 4)} {name} of {rng.choice(WORDS)} {rng.choice(WORDS)}"
    return f"{number} {name}"


def table_cells(rng: random.Random, n_rows: int, n_cols: int) -> list[list[str]]:
    """A header row of words, then rows of a label and numbers."""
    header = [rng.choice(WORDS).capitalize() for _ in range(n_cols)]
    rows = [header]
    for _ in range(n_rows - 1):
        label = rng.choice(WORDS)
        numbers = [f"{rng.uniform(0, 100):.{rng.randint(0, 2)}f}" for _ in range(n_cols - 1)]
        rows.append([label, *numbers])
    return rows


def table_html(cells: list[list[str]]) -> str:
    """The table as OmniDocBench HTML (one ``<tr>`` per row, ``<td>`` cells)."""
    rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells)
    return f"<table>{rows}</table>"


def _symbol(rng: random.Random) -> str:
    base = rng.choice(GREEK) if rng.random() < 0.3 else rng.choice(LATIN)
    roll = rng.random()
    if roll < 0.35:
        return f"{base}_{{{rng.choice(INDICES)}}}"
    if roll < 0.55:
        return f"{base}^{{{rng.randint(2, 3)}}}"
    return base


def _term(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.2:
        return f"\\frac{{{_symbol(rng)}}}{{{_symbol(rng)}}}"
    if roll < 0.3:
        return f"\\sum_{{i=1}}^{{n}} {_symbol(rng)}"
    if roll < 0.38:
        return f"\\sqrt{{{_symbol(rng)}}}"
    if roll < 0.45:
        return f"\\left( {_symbol(rng)} {rng.choice(OPERATORS)} {_symbol(rng)} \\right)"
    return _symbol(rng)


def formula(rng: random.Random) -> str:
    """A display formula in LaTeX, e.g. ``y_{i} = \\frac{a}{b} + \\alpha^{2}``."""
    terms = [_term(rng) for _ in range(rng.randint(1, 4))]
    rhs = terms[0] + "".join(f" {rng.choice(OPERATORS)} {t}" for t in terms[1:])
    return f"{_symbol(rng)} {rng.choice(RELATIONS)} {rhs}"


# The glyph styles' default alphabet: digits and capitals, which no language model can predict.
GLYPH_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def glyph_string(rng: random.Random, alphabet: str, length: tuple[int, int]) -> str:
    """Symbols drawn uniformly from ``alphabet``, ``length`` = (min, max) of them."""
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(*length)))


class WordText:
    """The text of word pages: English-like sentences, titles and captions."""

    def block(self, rng: random.Random, n_words: int) -> str:
        return paragraph(rng, n_words)

    def title(self, rng: random.Random, min_words: int = 2, max_words: int = 6) -> str:
        return title(rng, min_words, max_words)

    def line(self, rng: random.Random, min_words: int, max_words: int) -> str:
        return sentence(rng, min_words, max_words)

    def section(self, rng: random.Random, number: int) -> str:
        return section_title(rng, number)

    def caption(self, rng: random.Random, kind: str, number: int) -> str:
        return f"{kind} {number}: {sentence(rng, 3, 10)}"


class GlyphText:
    """Text with no language prior: random strings of ``alphabet``'s symbols.

    ``words=False`` (the ``glyph_blocks`` style): every block, title, caption and header is one
    string of ``glyph_count`` symbols. ``words=True`` (``glyph_words``): blocks are runs of such
    strings separated by spaces, wrapped into lines like words.
    """

    def __init__(self, alphabet: str, glyph_count: tuple[int, int], words: bool) -> None:
        self.alphabet, self.glyph_count, self.words = alphabet, glyph_count, words

    def _words(self, rng: random.Random, n_words: int) -> str:
        count = n_words if self.words else 1
        return " ".join(glyph_string(rng, self.alphabet, self.glyph_count) for _ in range(count))

    def block(self, rng: random.Random, n_words: int) -> str:
        return self._words(rng, n_words)

    def title(self, rng: random.Random, min_words: int = 1, max_words: int = 3) -> str:
        return self._words(rng, rng.randint(1, min(max_words, 3)))

    def line(self, rng: random.Random, min_words: int, max_words: int) -> str:
        return self._words(rng, rng.randint(1, min(max_words, 3)))

    def section(self, rng: random.Random, number: int) -> str:
        return self._words(rng, 1)

    def caption(self, rng: random.Random, kind: str, number: int) -> str:
        return self._words(rng, rng.randint(1, 2))
