"""DeZero 0.0.13's package layout on fastgrad's engine.

Code written for DeZero runs after replacing ``dezero`` by ``fastgrad.dezero``
in its imports::

    import fastgrad.dezero as dezero
    import fastgrad.dezero.functions as F
    from fastgrad.dezero import Variable

The top-level names are those of ``dezero/__init__.py`` in its full-core mode
(grads are Variables; ``backward(create_graph=True)``).  Dtypes follow
DeZero 0.0.13 on the installed NumPy (float32 programs print DeZero's
numbers); ``Config.keep_dtype = True`` keeps every array's dtype instead.  The stage-2 core is
``fastgrad.dezero.core_simple`` (the same as ``fastgrad``).
"""
is_simple_core = False

from fastgrad.dezero.core import (  # noqa: E402
    Config, Function, Parameter, Variable, as_array, as_variable, no_grad,
    setup_variable, test_mode, using_config,
)


from fastgrad.dezero.layers import Layer  # noqa: E402
from fastgrad.dezero.models import Model  # noqa: E402
from fastgrad.dezero.datasets import Dataset  # noqa: E402
from fastgrad.dezero.dataloaders import DataLoader, SeqDataLoader  # noqa: E402
from fastgrad._trace import TraceMismatchError, TraceWarning, run_on_replay, trace  # noqa: E402,F401

import fastgrad.dezero.cuda  # noqa: E402,F401
import fastgrad.dezero.dataloaders  # noqa: E402,F401
import fastgrad.dezero.datasets  # noqa: E402,F401
import fastgrad.dezero.functions  # noqa: E402,F401
import fastgrad.dezero.functions_conv  # noqa: E402,F401
import fastgrad.dezero.layers  # noqa: E402,F401
import fastgrad.dezero.models  # noqa: E402,F401
import fastgrad.dezero.optimizers  # noqa: E402,F401
import fastgrad.dezero.transforms  # noqa: E402,F401
import fastgrad.dezero.utils  # noqa: E402,F401

setup_variable()
__version__ = "0.0.13"
