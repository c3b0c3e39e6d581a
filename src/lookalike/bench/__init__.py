"""Performance tooling: realistic benchmark vectors and side-by-side benchmarks (``lookalike bench``)."""
