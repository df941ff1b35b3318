"""fastgrad: fast reverse-mode automatic differentiation with DeZero's API."""
