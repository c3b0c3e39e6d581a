"""lookalike.shop."""
