"""lookalike.train."""
