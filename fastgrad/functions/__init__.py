"""The function vocabulary: DeZero's ``dezero.functions`` on fastgrad's engine.

``import fastgrad.functions as F`` gives every op in one namespace, each a
``Function`` class with DeZero's name and a lowercase function beside it.
The modules hold one group each:

* :mod:`~fastgrad.functions.elementwise` -- ``exp``, ``log``, ``sigmoid``,
  ``relu`` ... : the op table's rows (``fastgrad/_optable.py``), compiled
  into the engine and re-exported from it;
* :mod:`~fastgrad.functions.tensor` -- ``reshape``, ``transpose``,
  ``get_item``, ``broadcast_to``, ``sum_to``, ``concatenate``, ``stack`` ...;
* :mod:`~fastgrad.functions.reductions` -- ``sum``, ``average``/``mean``,
  ``max``, ``min``;
* :mod:`~fastgrad.functions.matrix` -- ``matmul``, ``linear``;
* :mod:`~fastgrad.functions.activations` -- ``softmax``, ``log_softmax`` and
  the ``*_simple`` compositions;
* :mod:`~fastgrad.functions.losses` -- mean squared error, the cross
  entropies, ``accuracy``;
* :mod:`~fastgrad.functions.networks` -- ``dropout``, ``batch_norm``,
  ``embed_id``.

Every class here is an ordinary full-face ``Function``: ``forward`` takes
ndarrays and returns ndarrays, ``backward`` takes Variables and returns
Variables built from these functions, so every derivative can be
differentiated again (``backward(create_graph=True)``).  Each module imports
only the engine, ``_common`` and the modules listed before it; none imports
the faces above (``fastgrad.dezero.core`` registers its Variable class with
``_common`` instead).

Where DeZero 0.0.13 defines a formula (softmax, log-softmax, the losses),
the same floating-point operations run in the same order, so float64 results
equal DeZero's bit for bit.  On the full face the dtypes are DeZero's too
(float32 data may get float64 results where DeZero's formula promotes);
on the stage-2 face, and with ``Config.keep_dtype``, float32 stays
float32.  Beyond DeZero: broadcasting inputs get grads of their own shape,
``matmul`` follows ``np.matmul`` for 1-d and batched operands, and bad
arguments raise ``TypeError`` or ``ValueError`` naming the problem.
"""
from fastgrad._core import GraphFunction as Function  # noqa: F401 - DeZero's name
from fastgrad.functions import (
    activations, elementwise, losses, matrix, networks, reductions, tensor,
)
from fastgrad.functions.activations import *  # noqa: F401,F403
from fastgrad.functions.elementwise import *  # noqa: F401,F403
from fastgrad.functions.losses import *  # noqa: F401,F403
from fastgrad.functions.matrix import *  # noqa: F401,F403
from fastgrad.functions.networks import *  # noqa: F401,F403
from fastgrad.functions.reductions import *  # noqa: F401,F403
from fastgrad.functions.tensor import *  # noqa: F401,F403

__all__ = [name for module in (elementwise, tensor, reductions, matrix, activations,
                               losses, networks)
           for name in module.__all__]
