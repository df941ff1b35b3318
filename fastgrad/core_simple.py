"""DeZero's module name for the stage-2 core, so that the book's imports
(``from dezero.core_simple import Variable, setup_variable``) have a
fastgrad twin: ``from fastgrad.core_simple import Variable, setup_variable``."""
from fastgrad._core import (  # noqa: F401
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
