"""Bounded loopback load test of `lookalike serve` (same as `lookalike bench api`).

    python benchmarks/loadtest.py --catalog sample --requests 300 --duration 30 --concurrency 4
"""
import sys

from lookalike.bench.api import main

if __name__ == "__main__":
    sys.exit(main())
