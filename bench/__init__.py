"""Benchmarks: run them by hand (python -m bench.NAME); they print figures, never fail on time."""
