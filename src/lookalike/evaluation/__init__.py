"""lookalike.evaluation."""
