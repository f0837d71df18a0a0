"""Benchmarks of promptweights: run ``python -m benchmarks.parse`` from the repository root."""
