"""Benchmarks: how fast streamscore is, against what. ``python -m bench`` runs them."""
