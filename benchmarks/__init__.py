"""Benchmarks behind the README's Performance section; run from a checkout: ``python -m benchmarks.run_all``."""
