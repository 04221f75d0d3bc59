"""Benchmarks of dockrion-nb side by side with Dockrion 0.0.3 and the raw Redis ceiling.

Run ``python -m bench [--quick] [--redis-url URL]`` from the repository root. Every figure in a
row is measured in the same process run, so only the ratios are meant to be compared; the
results (with machine details) go to ``bench/RESULTS.md``.
"""
