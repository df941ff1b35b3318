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
import atexit
import hashlib
import numbers
import os
import sys
import time
import warnings
import weakref

import numpy as np

from fastgrad._array_utils import array_of

__all__ = [
    "Communicator", "create_communicator", "AverageGrads",
    "create_multi_node_optimizer", "scatter_dataset", "ScatteredDataset",
    "named_params",
]

_INSTALL_HINT = (
    "fastgrad.dezero.distributed needs mpi4py and an MPI library: "
    "pip install 'fastgrad[mpi]' (or pip install mpi4py), with Open MPI or MPICH "
    "installed (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi-dev)")


def _mpi():
    """Return mpi4py's ``MPI`` module (initialising MPI), or raise a clear ImportError."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(f"{_INSTALL_HINT} ({exc})") from exc
    except RuntimeError as exc:
        # mpi4py's binary wheels find the MPI library at import time.
        raise ImportError(f"{_INSTALL_HINT}; mpi4py could not load an MPI library: "
                          f"{exc}") from exc
    return MPI


# =============================================================================
# naming parameters
# =============================================================================
def _is_layer(obj):
    return isinstance(getattr(obj, "_params", None), (set, frozenset, list, tuple)) \
        and callable(getattr(obj, "params", None))


def _is_param(obj):
    return hasattr(obj, "data") and hasattr(obj, "grad") and not _is_layer(obj)


def _walk_layer(layer, prefix, out, seen, active):
    if id(layer) in active:
        raise ValueError(f"the layer at {prefix.rstrip('.') or 'the top'} contains itself")
    active.add(id(layer))
    attrs = layer.__dict__
    for name in sorted(layer._params):
        obj = attrs.get(name)
        if _is_layer(obj):
            _walk_layer(obj, f"{prefix}{name}.", out, seen, active)
        elif _is_param(obj) and id(obj) not in seen:
            # A parameter shared by two layers is named (and averaged) once.
            seen.add(id(obj))
            out.append((f"{prefix}{name}", obj))
    active.discard(id(layer))


def named_params(target):
    """List ``(name, parameter)`` pairs in an order that is the same on every rank.

    Parameters
    ----------
    target : Layer, Model, Optimizer or sequence of Parameters
        A layer or model is walked through its registered attributes, sorted
        by name (``"l0.W"``, ``"l0.b"``, ``"l1.W"``...); an optimizer stands
        for its ``target``; a list or tuple of parameters keeps its order and
        names them ``"[0]"``, ``"[1]"``...  Another object with a
        ``params()`` method is taken in that order (it must not depend on the
        process).  A parameter reachable twice is listed once.

    Returns
    -------
    list of (str, Parameter)

    Examples
    --------
    >>> model = MLP((10, 3))                        # doctest: +SKIP
    >>> [name for name, p in named_params(model)]   # doctest: +SKIP
    ['l0.W', 'l0.b', 'l1.W', 'l1.b']
    """
    if hasattr(target, "update") and hasattr(target, "hooks") and hasattr(target, "target"):
        if target.target is None:
            raise RuntimeError(f"{type(target).__name__} has no target yet: call "
                               "optimizer.setup(model) before its first update()")
        target = target.target
    out = []
    if _is_layer(target):
        _walk_layer(target, "", out, set(), set())
        return out
    if isinstance(target, (list, tuple)):
        items = [(f"[{i}]", p) for i, p in enumerate(target)]
    elif callable(getattr(target, "params", None)):
        items = [(f"params()[{i}]", p) for i, p in enumerate(target.params())]
    elif _is_param(target):
        items = [("[0]", target)]
    else:
        raise TypeError("expected a Layer or Model, an Optimizer, or a list of Parameters, "
                        f"got {type(target).__name__}")
    seen = set()
    for name, p in items:
        if not _is_param(p):
            raise TypeError(f"{name} is a {type(p).__name__}, not a Parameter")
        if id(p) not in seen:
            seen.add(id(p))
            out.append((name, p))
    return out


def _set_grad_array(param, array):
    grad = param.grad
    if isinstance(grad, np.ndarray):
        param.grad = array
    else:
        grad.data = array


# The dtypes MPI can sum natively: float and complex in single and double
# precision.  Other dtypes have no standard MPI sum (float16) or no meaning
# as gradients (integers would round the mean).
_REDUCIBLE = frozenset(np.dtype(t).str for t in
                       (np.float32, np.float64, np.complex64, np.complex128))


def _describe_entry(entry):
    if entry is None:
        return "no gradient"
    shape, dtype = entry
    return f"shape {tuple(shape)} {np.dtype(dtype).name}"


def _first_difference(mine, theirs):
    """First name whose (shape, dtype) differs between two {name: (shape, dtype)} maps."""
    order = list(mine) + [k for k in theirs if k not in mine]
    for name in order:
        a, b = mine.get(name), theirs.get(name)
        if a != b:
            return name, a, b
    return None


# =============================================================================
# excepthook: one failing rank ends the job
# =============================================================================
_excepthook_installed = False


def _install_excepthook():
    global _excepthook_installed
    if _excepthook_installed:
        return
    previous = sys.excepthook

    def abort_on_uncaught(exc_type, exc, tb):
        try:
            previous(exc_type, exc, tb)
        finally:
            _abort_world("raised an uncaught exception")

    sys.excepthook = abort_on_uncaught
    _excepthook_installed = True


def _abort_world(reason):
    """Print a line naming this rank, then end every rank of the job (MPI_Abort)."""
    MPI = sys.modules.get("mpi4py.MPI")
    if MPI is None or not MPI.Is_initialized() or MPI.Is_finalized():
        return
    world = MPI.COMM_WORLD
    if world.Get_size() == 1:
        return
    try:
        sys.stderr.write(f"fastgrad.dezero.distributed: rank {world.Get_rank()} of "
                         f"{world.Get_size()} {reason}; aborting all ranks (MPI_Abort)\n")
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - closed streams must not stop the abort
        pass
    world.Abort(1)


# =============================================================================
# Communicator
# =============================================================================
# What a rank is doing when it exchanges a header; compared across ranks.
_AVERAGE, _BCAST, _ALLREDUCE, _SCATTER, _BARRIER, _BCAST_OBJ, _FINISH = range(1, 8)
_DOING = {
    _AVERAGE: "averaging gradients",
    _BCAST: "broadcasting parameters",
    _ALLREDUCE: "in allreduce()",
    _SCATTER: "in scatter_dataset()",
    _BARRIER: "in barrier()",
    _BCAST_OBJ: "broadcasting an object",
    _FINISH: "finished (closing the communicator, as at exit)",
}


_NOTHING = object()


class Communicator:
    """The ranks of an MPI communicator, with collectives on model parameters.

    Usually made by :func:`create_communicator`.  It works on a duplicate of
    ``mpi_comm`` (``Dup()``), so its messages never mix with the program's
    own MPI calls.

    Parameters
    ----------
    mpi_comm : mpi4py.MPI.Intracomm, optional
        The processes to work with; ``MPI.COMM_WORLD`` by default.
    abort_on_error : bool, default True
        Install a ``sys.excepthook`` that ends every rank of the job with
        ``MPI.COMM_WORLD.Abort(1)`` after printing an uncaught exception, so
        the other ranks do not wait for this one forever.
    timeout : float, optional
        Seconds a rank waits for the others to join an operation before
        raising ``TimeoutError`` (by default it waits as long as MPI does,
        that is forever).  The wait polls the request, so set it only when a
        rank might stall for good (the job then fails instead of hanging).

    Attributes
    ----------
    rank, size : int
        This process's rank and the number of processes.
    intra_rank, intra_size : int
        The rank among, and number of, the processes on this machine.
    mpi_comm : mpi4py.MPI.Intracomm
        The communicator given (not the private duplicate).
    steps : int
        Number of gradient averagings done.

    Examples
    --------
    >>> comm = create_communicator()                 # doctest: +SKIP
    >>> comm.bcast_data(model)                       # rank 0's weights everywhere
    >>> loss.backward(); comm.allreduce_grad(model)  # grads are now the ranks' mean
    """

    def __init__(self, mpi_comm=None, *, abort_on_error=True, timeout=None):
        MPI = _mpi()
        if mpi_comm is None:
            mpi_comm = MPI.COMM_WORLD
        if not isinstance(mpi_comm, MPI.Intracomm):
            raise TypeError("mpi_comm must be an mpi4py intracommunicator (such as "
                            f"MPI.COMM_WORLD), got {type(mpi_comm).__name__}")
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) \
                    or not timeout > 0:
                raise ValueError(f"timeout must be a positive number of seconds or None, "
                                 f"got {timeout!r}")
            timeout = float(timeout)
        self._MPI = MPI
        self.mpi_comm = mpi_comm
        self._comm = mpi_comm.Dup()
        self.rank = self._comm.Get_rank()
        self.size = self._comm.Get_size()
        node = self._comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.intra_rank = node.Get_rank()
        self.intra_size = node.Get_size()
        node.Free()
        self.timeout = timeout
        self.steps = 0
        self._calls = 0
        self._closed = False
        self._header = np.zeros(4, dtype=np.int64)
        self._headers = np.zeros((self.size, 4), dtype=np.int64)
        self._buffers = {}
        self._last_info = self._last_digest = _NOTHING
        if abort_on_error:
            _install_excepthook()
        atexit.register(self._close_at_exit)

    def __repr__(self):
        state = ", closed" if self._closed else ""
        return f"<Communicator rank {self.rank} of {self.size}{state}>"

    # -------------------------------------------------------------- protocol
    def _digest(self, info):
        # Steps repeat the same info; skip re-hashing it.
        if info is self._last_info or info == self._last_info:
            return self._last_digest
        raw = hashlib.blake2b(repr(info).encode(), digest_size=16).digest()
        digest = np.frombuffer(raw, dtype=np.int64).copy()
        self._last_info, self._last_digest = info, digest
        return digest

    def _wait(self, request, doing):
        if self.timeout is None:
            request.Wait()
            return
        deadline = time.monotonic() + self.timeout
        pause = 1e-5
        while not request.Test():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"rank {self.rank} of {self.size} waited {self.timeout:g} s for the "
                    f"other ranks to join it {doing} (operation {self._calls}); a rank "
                    "has stalled or left the job")
            time.sleep(pause)
            pause = min(pause * 2, 1e-3)

    def _agree(self, kind, info, explain):
        """Check that every rank is doing ``kind`` with the same ``info``.

        ``explain(infos)`` turns the ranks' infos into an error message when
        they differ; every rank raises it, so none is left waiting.
        """
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        self._calls += 1
        if self.size == 1:
            return
        header = self._header
        header[0] = kind
        header[1] = self._calls
        header[2:] = self._digest(info)
        if self.timeout is None:
            self._comm.Allgather(header, self._headers)
        else:
            self._wait(self._comm.Iallgather(header, self._headers), _DOING[kind])
        headers = self._headers
        if (headers[:, 0] == kind).all() and (headers[:, 2:] == header[2:]).all():
            return
        infos = self._comm.allgather((kind, self.steps, info))
        kinds = [k for k, _, _ in infos]
        if len(set(kinds)) > 1:
            doing = "; ".join(f"rank {r} is {_DOING.get(k, k)} after {s} optimizer steps"
                              for r, (k, s, _) in enumerate(infos))
            raise RuntimeError(
                "the ranks are out of step: " + doing + ". Every rank must make the "
                "same sequence of collective calls (with a DataLoader, the same number "
                "of batches per epoch: see scatter_dataset's remainder=)")
        raise ValueError(explain([i for _, _, i in infos]))

    # -------------------------------------------------------------- params
    def _param_info(self, entries, kind):
        # (name, shape, dtype) of each entry's grad (kind "grad") or data.
        info = []
        for name, p in entries:
            a = array_of(p.grad) if kind == "grad" else p.data
            info.append((name, tuple(a.shape), a.dtype.str))
        return tuple(info)

    def _explain_params(self, what):
        def explain(infos):
            maps = [{n: (s, d) for n, s, d in info} for info in infos]
            for r in range(1, self.size):
                diff = _first_difference(maps[0], maps[r])
                if diff is not None:
                    name, a, b = diff
                    return (f"{what}: parameter {name!r} has {_describe_entry(a)} on "
                            f"rank 0 but {_describe_entry(b)} on rank {r}; every rank must "
                            "have the same parameters, with the same shapes and dtypes")
            return f"{what}: the ranks' parameters differ (same names, shapes and dtypes)"
        return explain

    def _buffer(self, key, dtype, n):
        buf = self._buffers.get(key)
        if buf is None or buf.dtype != dtype or buf.size < n:
            buf = self._buffers[key] = np.empty(max(n, 1), dtype=dtype)
        return buf[:n]

    def bcast_data(self, target, root=0):
        """Copy the parameter values of rank ``root`` to every rank, in place.

        Parameters whose ``data`` is still None (layers that create their
        weights on the first call) are skipped on every rank; which
        parameters exist, their shapes and dtypes must agree across ranks.

        Parameters
        ----------
        target : Layer, Model, Optimizer or sequence of Parameters
            See :func:`named_params`.
        root : int, default 0

        Returns
        -------
        bool
            True if some rank's values changed (the same answer on every rank).
        """
        root = self._check_root(root)
        entries = [(n, p) for n, p in named_params(target) if p.data is not None]
        info = self._param_info(entries, "data")

        def explain(infos):
            roots = [r for r, _ in infos]
            if len(set(roots)) > 1:
                return ("bcast_data: the ranks name different roots: "
                        + ", ".join(f"rank {r}: root {v}" for r, v in enumerate(roots)))
            return self._explain_params("bcast_data")([i for _, i in infos])

        self._agree(_BCAST, (root, info), explain)
        return self._bcast_entries(entries, root)

    def _bcast_entries(self, entries, root):
        if not entries:
            return False
        for name, p in entries:
            if p.data.dtype.hasobject:
                raise TypeError(f"bcast_data: parameter {name!r} holds Python objects "
                                f"(dtype {p.data.dtype}), which cannot be sent as bytes")
        if self.size == 1:
            return False
        total = sum(p.data.nbytes for _, p in entries)
        buf = self._buffer("bcast", np.uint8, total)
        offset = 0
        for _, p in entries:
            n = p.data.nbytes
            np.copyto(buf[offset:offset + n].view(p.data.dtype).reshape(p.data.shape), p.data)
            offset += n
        local = None if self.rank == root else buf.copy()
        self._comm.Bcast(buf, root=root)
        changed = local is not None and not np.array_equal(local, buf)
        if changed:
            offset = 0
            for _, p in entries:
                n = p.data.nbytes
                value = buf[offset:offset + n].view(p.data.dtype).reshape(p.data.shape)
                if p.data.flags.writeable:
                    np.copyto(p.data, value)
                else:
                    p.data = value.copy()
                offset += n
        flag = np.array([1 if changed else 0], dtype=np.int32)
        self._comm.Allreduce(self._MPI.IN_PLACE, flag, op=self._MPI.MAX)
        return bool(flag[0])

    def allreduce_grad(self, target):
        """Replace every gradient of ``target`` by its mean over the ranks, in place.

        The gradients are packed into one contiguous buffer per dtype and
        summed with one ``MPI_Allreduce`` (in place) per buffer; each sum is
        then divided by :attr:`size` in that dtype (after the sum, so two
        ranks give exactly ``(g0 + g1) / 2``) and written back into
        ``param.grad.data``.  Parameters without a gradient are left alone;
        which parameters have one, and the gradients' shapes and dtypes, must
        be the same on every rank (else every rank raises ValueError naming
        the first parameter that differs).

        Parameters
        ----------
        target : Layer, Model, Optimizer or sequence of Parameters
            See :func:`named_params`.
        """
        entries = [(n, p) for n, p in named_params(target) if p.grad is not None]
        self._average(entries, ())

    def _average(self, entries, new):
        # One header for the step: the grads to average and the parameters
        # to broadcast first (``new``), so a step costs one extra collective.
        for name, p in entries:
            g = array_of(p.grad)
            if not isinstance(g, np.ndarray):
                raise TypeError(f"allreduce_grad: parameter {name!r} has a gradient of "
                                f"type {type(g).__name__}; MPI needs NumPy arrays")
            if g.dtype.str not in _REDUCIBLE:
                raise TypeError(f"allreduce_grad: parameter {name!r} has a {g.dtype} "
                                "gradient; only float32, float64, complex64 and "
                                "complex128 gradients can be averaged")
        grads = self._param_info(entries, "grad")
        fresh = self._param_info(new, "data")

        def explain(infos):
            grad_infos = [g for g, _ in infos]
            new_infos = [f for _, f in infos]
            if any(g != grad_infos[0] for g in grad_infos):
                return self._explain_params("averaging gradients")(grad_infos)
            return self._explain_params(
                "broadcasting parameters before their first update")(new_infos)

        self._agree(_AVERAGE, (grads, fresh), explain)
        self.steps += 1
        if self.size == 1:
            return False     # the mean of one rank's gradients is its own
        changed = self._bcast_entries(new, 0) if new else False

        groups = {}
        for name, p in entries:
            groups.setdefault(array_of(p.grad).dtype.str, []).append(p)
        MPI = self._MPI
        for dtype, params in groups.items():
            arrays = [array_of(p.grad) for p in params]
            buf = self._buffer(("grad", dtype), np.dtype(dtype), sum(a.size for a in arrays))
            offset = 0
            for a in arrays:
                np.copyto(buf[offset:offset + a.size].reshape(a.shape), a)
                offset += a.size
            self._comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            offset = 0
            for p, a in zip(params, arrays):
                total = buf[offset:offset + a.size].reshape(a.shape)
                # The division writes the mean straight into the gradient
                # (one pass less than dividing the buffer, then copying).
                if a.flags.writeable:
                    np.divide(total, self.size, out=a)
                else:
                    # A read-only gradient (a broadcast view) gets a new array.
                    _set_grad_array(p, total / self.size)
                offset += a.size
        return changed

    # -------------------------------------------------------------- values
    def allreduce(self, x, op="sum"):
        """Reduce a number or an array over the ranks; every rank gets the result.

        Parameters
        ----------
        x : number or numpy.ndarray
            The same shape and dtype on every rank.
        op : {"sum", "mean", "max", "min"}

        Returns
        -------
        numpy.ndarray or scalar
            A new array; a Python number for a Python number, a NumPy scalar
            for a NumPy scalar.  ``"mean"`` is the sum divided by
            :attr:`size` in ``x``'s dtype (floating point).

        Examples
        --------
        >>> total = comm.allreduce(epoch_loss_sum)      # doctest: +SKIP
        """
        ops = {"sum": self._MPI.SUM, "mean": self._MPI.SUM,
               "max": self._MPI.MAX, "min": self._MPI.MIN}
        if op not in ops:
            raise ValueError(f"op must be one of {sorted(ops)}, got {op!r}")
        python_number = isinstance(x, numbers.Number) and not isinstance(x, np.generic)
        scalar = np.ndim(x) == 0 and not isinstance(x, np.ndarray)
        a = np.array(x)   # a private, C-contiguous copy
        if a.dtype.kind not in "iufc":
            raise TypeError(f"allreduce: cannot reduce an array of dtype {a.dtype} "
                            "(numbers only; cast booleans to int)")
        if op == "mean" and a.dtype.kind not in "fc":
            raise TypeError(f"allreduce: op='mean' needs a floating-point value, got {a.dtype}")

        def explain(infos):
            for r in range(1, self.size):
                if infos[r] != infos[0]:
                    (s0, d0, o0), (s1, d1, o1) = infos[0], infos[r]
                    return (f"allreduce: rank 0 reduces shape {s0} {np.dtype(d0).name} with "
                            f"op {o0!r} but rank {r} shape {s1} {np.dtype(d1).name} with "
                            f"op {o1!r}")
            return "allreduce: the ranks' arguments differ"

        self._agree(_ALLREDUCE, (a.shape, a.dtype.str, op), explain)
        self._comm.Allreduce(self._MPI.IN_PLACE, a, op=ops[op])
        if op == "mean":
            a /= self.size
        if python_number:
            return a.item()
        return a[()] if scalar else a

    def bcast_obj(self, obj, root=0):
        """Return rank ``root``'s ``obj`` on every rank (pickled; for small objects)."""
        root = self._check_root(root)
        self._agree(_BCAST_OBJ, root, lambda infos: (
            "bcast_obj: the ranks name different roots: "
            + ", ".join(f"rank {r}: {v}" for r, v in enumerate(infos))))
        return self._comm.bcast(obj, root=root)

    def barrier(self):
        """Wait until every rank has called ``barrier()``."""
        self._agree(_BARRIER, None, lambda infos: "barrier: unexpected mismatch")

    def _check_root(self, root):
        if isinstance(root, bool) or not isinstance(root, numbers.Integral) \
                or not 0 <= root < self.size:
            raise ValueError(f"root must be a rank between 0 and {self.size - 1}, got {root!r}")
        return int(root)

    # -------------------------------------------------------------- closing
    def close(self):
        """Wait until every rank has closed, then free the communicator (collective).

        Called at interpreter exit for a communicator still open.  A rank
        that closes while another still averages gradients (they took
        different numbers of steps) makes both raise instead of waiting.
        """
        if self._closed:
            return
        MPI = self._MPI
        if MPI.Is_finalized():
            self._closed = True
            return
        try:
            self._agree(_FINISH, None, lambda infos: "close: unexpected mismatch")
        finally:
            self._closed = True
        self._comm.Free()

    def _close_at_exit(self):
        if self._closed:
            return
        try:
            self.close()
        except BaseException as exc:  # noqa: BLE001 - at exit, report and end the job
            sys.stderr.write(f"fastgrad.dezero.distributed: rank {self.rank}: {exc}\n")
            _abort_world("could not close its communicator cleanly")
            os._exit(1)


def create_communicator(mpi_comm=None, *, abort_on_error=True, timeout=None):
    """Make a :class:`Communicator` over ``mpi_comm`` (``MPI.COMM_WORLD`` by default).

    The first call imports mpi4py, which initialises MPI.  Collective: every
    rank of ``mpi_comm`` must call it.

    Parameters
    ----------
    mpi_comm : mpi4py.MPI.Intracomm, optional
    abort_on_error : bool, default True
        An uncaught exception on any rank ends the whole job
        (``MPI.COMM_WORLD.Abort(1)`` after the traceback is printed).
    timeout : float, optional
        Seconds to wait for the other ranks at each operation (default: no limit).

    Returns
    -------
    Communicator

    Raises
    ------
    ImportError
        If mpi4py (or the MPI library under it) is missing; the message says
        what to install.
    """
    return Communicator(mpi_comm, abort_on_error=abort_on_error, timeout=timeout)


# =============================================================================
# Optimizer hook
# =============================================================================
class AverageGrads:
    """Optimizer hook: average the gradients over the ranks before the update.

    Add it first, so the other hooks (weight decay, gradient clipping) see
    the averaged gradients, as one process with the whole batch would::

        optimizer = SGD(lr=0.1).setup(model)
        optimizer.add_hook(AverageGrads(comm, optimizer))

    (:func:`create_multi_node_optimizer` does exactly this.)  The hook also
    sorts the optimizer's list of parameters by name, so that the hooks
    after it and the updates visit them in the same order on every rank
    (``ClipGrad`` sums the squares parameter by parameter; in
    ``params()`` order, which differs between processes, the ranks would
    round the norm differently and drift apart).  Before a
    parameter's first update, rank 0's value is broadcast to all ranks; if
    that changed any rank's parameters (the ranks drew different initial
    weights), the gradients of that step were computed at different points
    and are dropped: the step updates nothing (an ``Adam`` still counts it)
    and a ``RuntimeWarning`` says so on rank 0.  Seeding NumPy identically
    on every rank keeps the first step.

    Parameters
    ----------
    comm : Communicator
    target : Layer, Model, Optimizer or sequence of Parameters
        Names the parameters the same way on every rank (see
        :func:`named_params`); an optimizer stands for its current target,
        all of whose parameters are broadcast before their first update,
        including those without a gradient.
    """

    def __init__(self, comm, target):
        if not isinstance(comm, Communicator):
            raise TypeError(f"comm must be a Communicator, got {type(comm).__name__}")
        if target is None:
            raise TypeError("AverageGrads needs the target (model or optimizer) to name "
                            "parameters consistently across ranks")
        self.comm = comm
        self.target = target
        self._synced = {}

    def __call__(self, params):
        named = named_params(self.target)
        names = {id(p): n for n, p in named}
        with_grad = []
        for p in params:
            if p.grad is None:
                continue
            name = names.get(id(p))
            if name is None:
                raise ValueError(f"AverageGrads: the optimizer passed a parameter "
                                 f"({getattr(p, 'name', None)!r}, shape "
                                 f"{getattr(p.data, 'shape', None)}) that is not part of "
                                 "the hook's target")
            with_grad.append((name, p))
        with_grad.sort(key=lambda e: e[0])
        synced = self._synced
        new = [(n, p) for n, p in named if p.data is not None
               and (synced.get(id(p)) is None or synced[id(p)]() is not p)]
        changed = self.comm._average(with_grad, new)
        for _, p in new:
            synced[id(p)] = weakref.ref(p)
        # The hooks after this one and the updates then visit the parameters
        # in name order on every rank: a sum over parameters (ClipGrad's
        # norm) would otherwise be rounded differently where params() order
        # differs, and the ranks' weights would drift apart.
        if isinstance(params, list):
            order = {id(p): i for i, (_, p) in enumerate(named)}
            params.sort(key=lambda p: order.get(id(p), -1))
        if changed:
            for p in params:
                p.grad = None
            if self.comm.rank == 0:
                warnings.warn(
                    "the ranks' parameters differed before their first update: rank 0's "
                    "were broadcast and this step's gradients dropped (seed NumPy the same "
                    "way on every rank to keep the first step)", RuntimeWarning, stacklevel=3)


def create_multi_node_optimizer(optimizer, comm):
    """Make ``optimizer`` average the gradients over ``comm``'s ranks before each update.

    Inserts an :class:`AverageGrads` hook in front of the optimizer's other
    hooks and returns the same optimizer (so ``setup(model)`` can follow, as
    with ChainerMN's function of this name).

    Parameters
    ----------
    optimizer : Optimizer
    comm : Communicator

    Returns
    -------
    Optimizer
        ``optimizer`` itself.

    Examples
    --------
    >>> opt = create_multi_node_optimizer(SGD(lr=0.1), comm).setup(model)  # doctest: +SKIP
    """
    if not isinstance(getattr(optimizer, "hooks", None), list) \
            or not callable(getattr(optimizer, "update", None)):
        raise TypeError(f"expected a fastgrad.dezero Optimizer, got {type(optimizer).__name__}")
    if any(isinstance(h, AverageGrads) for h in optimizer.hooks):
        raise ValueError("this optimizer already averages gradients (it has an AverageGrads hook)")
    optimizer.hooks.insert(0, AverageGrads(comm, optimizer))
    return optimizer


# =============================================================================
# scatter_dataset
# =============================================================================
_REMAINDERS = ("uneven", "drop", "repeat")


def _share_indices(n, rank, size, perm, remainder):
    if remainder == "drop":
        perm = perm[:n - n % size]
    elif remainder == "repeat" and n % size:
        perm = np.resize(perm, n + (-n) % size)   # wraps around to the start
    return perm[rank::size]


class ScatteredDataset:
    """One rank's share of a dataset (made by :func:`scatter_dataset`).

    Indexing gives ``dataset[indices[i]]``; ``len`` is the share's size.
    :meth:`set_epoch` deals the examples anew from that epoch's global
    permutation, without communication.

    Attributes
    ----------
    dataset : Dataset
        The whole dataset.
    indices : numpy.ndarray
        The examples of this rank, in order (read-only).
    epoch : int
    """

    def __init__(self, dataset, rank, size, shuffle, seed, remainder, epoch=0):
        self.dataset = dataset
        self.rank, self.size = rank, size
        self.shuffle, self.seed, self.remainder = shuffle, seed, remainder
        self._n = len(dataset)
        self.set_epoch(epoch)

    def permutation(self, epoch=None):
        """The global order of the examples in ``epoch`` (the current one by default)."""
        epoch = self.epoch if epoch is None else epoch
        if not self.shuffle:
            return np.arange(self._n)
        return np.random.default_rng([self.seed, epoch]).permutation(self._n)

    def set_epoch(self, epoch):
        """Deal this rank's share of ``epoch``'s permutation (the same on all ranks)."""
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self.epoch = int(epoch)
        indices = _share_indices(self._n, self.rank, self.size, self.permutation(),
                                 self.remainder)
        indices = np.ascontiguousarray(indices)
        indices.flags.writeable = False
        self.indices = indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (numbers.Integral,)):
            raise TypeError(f"a dataset is indexed by one integer, got {type(index).__name__}")
        return self.dataset[int(self.indices[index])]

    def __repr__(self):
        return (f"<ScatteredDataset rank {self.rank} of {self.size}: {len(self)} of "
                f"{self._n} examples, epoch {self.epoch}>")


def scatter_dataset(dataset, comm, shuffle=True, seed=None, remainder="uneven"):
    """Give each rank its share of ``dataset``, for a ``DataLoader`` (collective).

    Every rank passes the whole dataset (built the same way, e.g. from the
    same file or seed; nothing is sent but a seed and a check).  The
    examples are put in a global order (a permutation drawn from ``seed``
    and the epoch, the same on every rank) and dealt out like cards: rank
    ``r`` of ``P`` gets positions ``r, r + P, r + 2P, ...``.  So each epoch
    every example goes to exactly one rank, and with ``DataLoader(share,
    batch_size=B, shuffle=False)`` on every rank, the ranks' ``k``-th
    batches together are the ``k``-th batch of size ``P * B`` of one process
    reading the same global order: ``P`` ranks follow the same trajectory as
    one process with a ``P`` times larger batch.  Call
    ``share.set_epoch(epoch)`` at the start of each epoch for a new global
    order (a ``DataLoader`` with ``shuffle=True`` instead shuffles within
    the fixed share: also each example once per epoch, but not the
    one-process order).

    When ``len(dataset)`` is not a multiple of ``P``, ``remainder`` decides:

    * ``"uneven"`` (default): the first ``len(dataset) % P`` ranks hold one
      example more; every example is used exactly once per epoch.  Ranks
      must still take the same number of optimizer steps: with a
      ``DataLoader`` of batch size ``B`` that holds unless the shorter share
      is a multiple of ``B``; otherwise the ranks get out of step, which
      ends in a RuntimeError on every rank (at the latest when the first
      rank finishes), never a hang.
    * ``"drop"``: the last ``len(dataset) % P`` examples of each epoch's
      order are left out, so the shares have equal length (with
      ``shuffle``, a different few each epoch).
    * ``"repeat"``: the order is extended by its first examples to a
      multiple of ``P``: equal shares, a few examples seen twice per epoch.

    Parameters
    ----------
    dataset : Dataset
        Anything with ``len()`` and integer indexing, of the same length on
        every rank.
    comm : Communicator
    shuffle : bool, default True
        Draw the global order at random; otherwise it is ``0, 1, 2, ...``.
    seed : int, optional
        Seed of the global orders (the same on every rank).  By default rank
        0 draws one and broadcasts it.
    remainder : {"uneven", "drop", "repeat"}

    Returns
    -------
    ScatteredDataset

    Raises
    ------
    ValueError
        If the ranks' datasets differ in length, they pass different
        arguments, or a rank would get no example.

    Examples
    --------
    >>> train = scatter_dataset(Spiral(), comm, seed=0)   # doctest: +SKIP
    >>> loader = DataLoader(train, batch_size=30, shuffle=False)
    """
    if not isinstance(comm, Communicator):
        raise TypeError(f"comm must be a Communicator, got {type(comm).__name__}")
    if remainder not in _REMAINDERS:
        raise ValueError(f"remainder must be one of {_REMAINDERS}, got {remainder!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                             or seed < 0):
        raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
    n = len(dataset)
    shuffle = bool(shuffle)
    seed = None if seed is None else int(seed)

    def explain(infos):
        labels = ("the dataset's length", "shuffle", "seed", "remainder")
        for r in range(1, comm.size):
            for label, a, b in zip(labels, infos[0], infos[r]):
                if a != b:
                    return (f"scatter_dataset: {label} is {a!r} on rank 0 but {b!r} on "
                            f"rank {r}; every rank must pass the same dataset and arguments")
        return "scatter_dataset: the ranks' arguments differ"

    comm._agree(_SCATTER, (n, shuffle, seed if shuffle else None, remainder), explain)
    if shuffle and seed is None:
        drawn = int(np.random.SeedSequence().entropy) if comm.rank == 0 else None
        seed = comm.bcast_obj(drawn, root=0)
    smallest = -(-n // comm.size) if remainder == "repeat" else n // comm.size
    if smallest == 0:
        raise ValueError(f"scatter_dataset: {n} examples cannot give each of the "
                         f"{comm.size} ranks at least one (remainder={remainder!r})")
    share = ScatteredDataset(dataset, comm.rank, comm.size, shuffle, seed, remainder)
    # The global order comes from NumPy's Generator on each rank; check once
    # that every rank draws the same one (NumPy versions could differ).
    order = share.permutation()
    digest = hashlib.blake2b(order.astype(np.int64).tobytes(), digest_size=16).hexdigest()
    comm._agree(_SCATTER, digest, lambda infos: (
        "scatter_dataset: the ranks drew different global orders from the same seed "
        "(different NumPy versions?); pass shuffle=False or use the same NumPy everywhere"))
    return share
