"""Benchmarks of sparseseg on the shared data (run with ``python -m benchmarks.NAME``)."""
