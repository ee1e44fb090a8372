"""Research studies run by ``python -m zoo.study``: a grid of systems trained and evaluated on
one held-out page set, and the statistics, table and plots that compare them."""
