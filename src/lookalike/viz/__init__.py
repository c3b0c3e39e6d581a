"""lookalike.viz.grids."""
