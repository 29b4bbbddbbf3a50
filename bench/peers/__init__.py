"""Peers the benchmarks compare streamscore with (optional, bench-only dependencies)."""
