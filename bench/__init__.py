"""Benchmarks that measure Lattice side by side with the raw transport."""
