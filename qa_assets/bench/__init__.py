"""Benchmarks: throughput of the project's methods, measured against baselines in the same run."""
