"""Data-parallel training: the gradient-averaging optimizer hook and one
rank's share of a dataset."""
import hashlib
import numbers
import warnings
import weakref

import numpy as np

from .communicator import _SCATTER, Communicator
from .params import named_params


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
