"""Compiled elementwise kernels (placeholder until the kernels land)."""
