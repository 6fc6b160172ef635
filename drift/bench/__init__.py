"""Benchmarks: commands that measure the product and write their results under docs/."""
