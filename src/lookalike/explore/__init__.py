"""lookalike.explore."""
