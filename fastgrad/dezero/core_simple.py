"""DeZero's stage-2 core (``dezero.core_simple``): fastgrad's top-level face."""
from fastgrad.core_simple import *  # noqa: F401,F403
from fastgrad.core_simple import __all__  # noqa: F401
