"""fastgrad: fast reverse-mode automatic differentiation with DeZero's API.

``import fastgrad as dezero`` runs code written for DeZero's stage 2
(``dezero.core_simple``) unchanged, on a compiled engine.
"""
from fastgrad._core import (
    PURE,
    Add,
    Config,
    Div,
    Function,
    Mul,
    Neg,
    Pow,
    Sub,
    Variable,
    add,
    as_array,
    as_variable,
    div,
    mul,
    neg,
    no_grad,
    pow,
    rdiv,
    rsub,
    setup_variable,
    sub,
    using_config,
)

# Large kernel results reuse a small bounded buffer cache (see README, "Memory").
from fastgrad._ops import buffer_cache_info, clear_buffer_cache, set_buffer_cache

__version__ = "0.1.0"

__all__ = [
    "Variable", "Function", "Config", "using_config", "no_grad", "as_array",
    "as_variable", "setup_variable", "Add", "Mul", "Neg", "Sub", "Div", "Pow",
    "add", "mul", "neg", "sub", "rsub", "div", "rdiv", "pow",
]

setup_variable()
