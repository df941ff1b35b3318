"""Data-parallel training over MPI, in the style of ChainerMN.

Every process (an MPI *rank*) runs the same training script on its own share
of the data.  After each backward pass the ranks average their gradients with
one ``MPI_Allreduce``, so every rank applies the same update to the same
parameters and the model stays identical everywhere.  MPI comes from
`mpi4py <https://mpi4py.readthedocs.io>`_, an optional dependency
(``pip install 'fastgrad[mpi]'``) over an MPI library such as Open MPI or
MPICH; ``import fastgrad.dezero`` does not import this module, and importing
it does not import mpi4py (the first :func:`create_communicator` does).

A training loop::

    import numpy as np
    import fastgrad.dezero as dezero
    import fastgrad.dezero.functions as F
    from fastgrad.dezero import DataLoader, optimizers
    from fastgrad.dezero.models import MLP
    from fastgrad.dezero.distributed import (
        create_communicator, create_multi_node_optimizer, scatter_dataset)

    comm = create_communicator()                      # MPI.COMM_WORLD
    np.random.seed(0)                                 # same initial weights everywhere
    train = scatter_dataset(dezero.datasets.Spiral(), comm, seed=0)
    loader = DataLoader(train, batch_size=30, shuffle=False)
    model = MLP((10, 3))
    optimizer = create_multi_node_optimizer(optimizers.SGD(lr=1.0), comm).setup(model)
    for epoch in range(300):
        train.set_epoch(epoch)                        # a new global shuffle
        for x, t in loader:
            loss = F.softmax_cross_entropy(model(x), t)
            model.cleargrads()
            loss.backward()
            optimizer.update()                        # averages, then updates

and ``mpirun -n 2 python train.py``.  With two ranks and ``batch_size=30``
this follows the same trajectory as one process with ``batch_size=60``
(see :func:`scatter_dataset`), up to the rounding of the sums.

**Averaging.**  :meth:`Communicator.allreduce_grad` packs the gradients into
one contiguous buffer per dtype (usually one), sums the buffers of all ranks
in place (``MPI.IN_PLACE``), divides by the number of ranks in the grads'
own dtype and writes the result back into each ``param.grad.data``.  The
division comes *after* the sum: the result is the correctly rounded mean
``(g0 + g1) / 2`` (dividing by a power of two is exact), the same number
``numpy.mean`` gives for the stacked gradients, and for a loss that is a
mean over the batch, the mean of the ranks' gradients is the gradient of the
mean loss over the union of their batches when the batches have equal size.

**Parameter order.**  DeZero's ``Layer`` keeps its attribute names in a set,
whose order differs from process to process (string hashing is randomised
per interpreter), so ``model.params()`` cannot line the ranks' parameters
up.  The communicator names every parameter by its attribute path
(``"l0.W"``) and orders the buffers by these names.

**Checks before each collective.**  Every operation starts by exchanging a
32-byte header (what the rank is doing and a digest of the names, shapes and
dtypes involved).  When they differ, the ranks exchange the details and
every rank raises the same error naming the first parameter that differs:
a shape, a dtype, a gradient present on one rank and missing on another, or
ranks doing different things (one finished while another still trains).

**Faults.**  A rank that raises an uncaught exception leaves the others
blocked in a collective.  :func:`create_communicator` installs a
``sys.excepthook`` that prints the traceback and then calls
``MPI.COMM_WORLD.Abort(1)``, which ends every rank of the job with an error.
At interpreter exit each communicator runs a last header exchange, so a rank
that stops taking steps before the others (a shorter data share, an early
``sys.exit``) makes every rank fail with a message instead of leaving the
others waiting.  ``timeout=`` bounds how long a rank waits for the others to
join a header exchange.
"""
from .communicator import Communicator, create_communicator
from .params import named_params
from .training import (AverageGrads, ScatteredDataset, create_multi_node_optimizer,
                       scatter_dataset)

__all__ = [
    "Communicator", "create_communicator", "AverageGrads",
    "create_multi_node_optimizer", "scatter_dataset", "ScatteredDataset",
    "named_params",
]
