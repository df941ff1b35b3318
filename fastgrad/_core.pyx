"""The autodiff engine (placeholder)."""
