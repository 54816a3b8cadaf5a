"""Benchmarks of the reference GPT-2 beside transformers and the NumPy oracle (docs/benchmarks.md):
``python -m gpt2_benchmarks --mode quick``."""
