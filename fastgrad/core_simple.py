"""DeZero's stage-2 core under DeZero's module name.

The book imports ``from dezero.core_simple import Variable, setup_variable``;
the same line works as ``from fastgrad.core_simple import ...``.  The
package ``fastgrad`` re-exports everything listed here.
"""
from fastgrad._core import (
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

__all__ = [
    "Variable", "Function", "Config", "using_config", "no_grad", "as_array",
    "as_variable", "setup_variable", "Add", "Mul", "Neg", "Sub", "Div", "Pow",
    "add", "mul", "neg", "sub", "rsub", "div", "rdiv", "pow",
]
