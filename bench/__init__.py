"""Benchmarks (development only): nothing in the runtime path imports this package."""
