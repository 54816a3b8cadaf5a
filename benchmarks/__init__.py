"""Benchmarks of the reference GPT-2 (see docs/benchmarks.md); run ``python benchmarks/run.py``."""
