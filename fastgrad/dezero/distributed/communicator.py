"""The communicator: headers, checks and collectives over mpi4py."""
import atexit
import hashlib
import numbers
import os
import sys
import time

import numpy as np

from fastgrad._array_utils import array_of

from .params import _set_grad_array, named_params


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
