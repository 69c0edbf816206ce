"""The latency benchmark under load: `python -m bench.load` (docs/benchmark.md)."""
