"""Programs that tests/test_distributed.py runs under ``mpirun``: one case per call.

    mpirun -n 2 python mpi_worker.py CASE

A passing case prints ``PASS CASE`` on rank 0 and exits 0; a failed check
raises (the communicator's excepthook then aborts the job).  The ``fail-*``
cases are programs that must fail: the test checks that the job ends, with
a non-zero status and the expected message, instead of hanging.

The oracles use mpi4py's own collectives on ``MPI.COMM_WORLD`` (gathering
every rank's arrays as Python objects), never the code under test.
"""
import sys
import time
import warnings

import numpy as np
from mpi4py import MPI

import fastgrad.dezero as dezero
import fastgrad.dezero.functions as F
from fastgrad.dezero import DataLoader, Parameter, Variable, optimizers
from fastgrad.dezero.distributed import (
    AverageGrads, create_communicator, create_multi_node_optimizer, named_params,
    scatter_dataset)
from fastgrad.dezero.models import MLP

WORLD = MPI.COMM_WORLD


def mlp(sizes, dtype=np.float64, seed=0, dim=4):
    """An MLP with weights of ``dtype`` drawn now from ``np.random.seed(seed)``."""
    np.random.seed(seed)
    model = MLP(sizes)
    for layer in model.layers:
        layer.dtype = dtype
        layer.b.data = layer.b.data.astype(dtype)
    model(np.zeros((1, dim), dtype))
    return model


def batch(rank, n=6, dim=4, classes=3, dtype=np.float64, step=0):
    rng = np.random.default_rng([rank, step, 7])
    return rng.standard_normal((n, dim)).astype(dtype), rng.integers(0, classes, n)


def grads_of(model):
    return {name: p.grad.data.copy() for name, p in named_params(model) if p.grad is not None}


def values_of(model):
    return {name: p.data.copy() for name, p in named_params(model)}


def assert_same_on_all_ranks(arrays, what):
    gathered = WORLD.allgather(arrays)
    for r, other in enumerate(gathered):
        assert other.keys() == arrays.keys(), (what, r, sorted(other), sorted(arrays))
        for name in arrays:
            a, b = arrays[name], other[name]
            assert a.dtype == b.dtype and a.shape == b.shape, (what, name, r)
            assert np.array_equal(a, b), f"{what}: {name} differs between rank {r} and " \
                f"rank {WORLD.rank} by {np.max(np.abs(a - b))}"


def exact_mean(arrays):
    # The mean the communicator promises: for two ranks (g0 + g1) / 2 exactly;
    # for more, the sum's association is MPI's, so this is the reference up to
    # rounding.
    total = arrays[0].copy()
    for a in arrays[1:]:
        total += a
    return total / len(arrays)


# =============================================================================
# passing cases
# =============================================================================
def case_average():
    comm = create_communicator()
    size = comm.size
    probe = mlp((5, 4, 3))
    names = {id(p): name for name, p in named_params(probe)}
    print_order = [names[id(p)] for p in probe.params()]
    for dtype in (np.float64, np.float32):
        model = mlp((5, 4, 3), dtype)
        x, t = batch(comm.rank, dtype=dtype)
        loss = F.softmax_cross_entropy(model(x), t)
        model.cleargrads()
        loss.backward()
        before = grads_of(model)
        arrays = {name: p.grad.data for name, p in named_params(model)}
        everyone = WORLD.allgather(before)
        comm.allreduce_grad(model)
        for name, p in named_params(model):
            g = p.grad.data
            assert g is arrays[name], f"{name}: the gradient array was replaced, not updated"
            assert g.dtype == before[name].dtype   # averaged in its own dtype
            expected = exact_mean([e[name] for e in everyone])
            if size == 2:
                assert np.array_equal(g, expected), \
                    f"{name} {np.dtype(dtype).name}: not (g0 + g1) / 2 exactly: " \
                    f"off by {np.max(np.abs(g - expected))}"
            else:
                np.testing.assert_allclose(g, expected, rtol=8 * np.finfo(dtype).eps,
                                           atol=8 * np.finfo(dtype).eps)
            if comm.rank == 0 and size > 1:
                assert not np.array_equal(g, before[name]), f"{name}: unchanged"
        assert_same_on_all_ranks(grads_of(model), f"averaged {np.dtype(dtype).name} grads")

    # Two dtypes in one model (two buffers), complex values, a parameter
    # without a gradient and read-only gradients, through a list target.
    rng = np.random.default_rng(comm.rank)
    params = [Parameter(np.zeros(3)), Parameter(np.zeros((2, 2), np.float32)),
              Parameter(np.zeros(2, np.complex128)), Parameter(np.zeros(4))]
    raw = [rng.standard_normal(3), rng.standard_normal((2, 2)).astype(np.float32),
           rng.standard_normal(2) + 1j * rng.standard_normal(2), None]
    for p, g in zip(params, raw):
        if g is not None:
            g = g.copy()
            g.flags.writeable = p is not params[0]
            p.grad = Variable(g)
    everyone = WORLD.allgather(raw)
    comm.allreduce_grad(params)
    for i, p in enumerate(params[:3]):
        expected = exact_mean([e[i] for e in everyone])
        assert p.grad.data.dtype == raw[i].dtype
        if size == 2:
            assert np.array_equal(p.grad.data, expected), (i, p.grad.data, expected)
        else:
            np.testing.assert_allclose(p.grad.data, expected, rtol=1e-6)
    assert params[3].grad is None
    orders = WORLD.gather(print_order, root=0)
    if comm.rank == 0:
        for r, order in enumerate(orders):
            print(f"params() order on rank {r}: {' '.join(order)}", flush=True)
        print("PASS average", flush=True)


def case_updates():
    """Updates of the distributed optimizer against a one-process oracle.

    Every rank also trains a local copy with the plain optimizer on the
    averaged gradients computed here with NumPy from the gathered per-rank
    gradients: the distributed parameters must equal it bit for bit (two
    ranks) and be identical on all ranks after every update.
    """
    comm = create_communicator()
    for make_opt in (lambda: optimizers.SGD(lr=0.5),
                     lambda: optimizers.MomentumSGD(lr=0.1),
                     lambda: optimizers.Adam()):
        model = mlp((6, 3), seed=1)
        ref = mlp((6, 3), seed=1)
        opt = create_multi_node_optimizer(make_opt(), comm).setup(model)
        opt.add_hook(optimizers.WeightDecay(1e-3))
        opt.add_hook(optimizers.ClipGrad(0.5))
        ref_opt = make_opt().setup(ref)
        # The distributed hook visits the parameters in name order (so that
        # ClipGrad's norm is summed in the same order on every rank).
        ref_order = {id(p): n for n, p in named_params(ref)}
        ref_opt.add_hook(lambda params: params.sort(key=lambda p: ref_order[id(p)]))
        ref_opt.add_hook(optimizers.WeightDecay(1e-3))
        ref_opt.add_hook(optimizers.ClipGrad(0.5))
        ref_params = dict(named_params(ref))
        for step in range(5):
            x, t = batch(comm.rank, step=step)
            for m in (model, ref):
                loss = F.softmax_cross_entropy(m(x), t)
                m.cleargrads()
                loss.backward()
            everyone = WORLD.allgather(grads_of(ref))
            for name, p in ref_params.items():
                p.grad.data[...] = exact_mean([e[name] for e in everyone])
            opt.update()
            ref_opt.update()
            values = values_of(model)
            assert_same_on_all_ranks(values, f"{type(opt).__name__} step {step}")
            for name, value in values.items():
                expected = ref_params[name].data
                if comm.size == 2:
                    assert np.array_equal(value, expected), \
                        f"{type(opt).__name__} step {step}: {name} is off by " \
                        f"{np.max(np.abs(value - expected))}"
                else:
                    np.testing.assert_allclose(value, expected, rtol=1e-12, atol=1e-12)

    # Ranks that start from different weights: rank 0's are broadcast, the
    # first step (whose gradients were taken at different points) is dropped.
    model = mlp((6, 3), seed=10 + comm.rank)
    opt = create_multi_node_optimizer(optimizers.SGD(lr=0.5), comm).setup(model)
    x, t = batch(comm.rank)
    rank0 = WORLD.bcast(values_of(model), root=0)
    for step in range(3):
        loss = F.softmax_cross_entropy(model(batch(comm.rank, step=step)[0]), t)
        model.cleargrads()
        loss.backward()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            opt.update()
        values = values_of(model)
        assert_same_on_all_ranks(values, f"differently seeded, step {step}")
        if step == 0 and comm.size > 1:
            for name in values:
                assert np.array_equal(values[name], rank0[name]), name
            if comm.rank == 0:
                assert any("first update" in str(w.message) for w in caught), caught
        else:
            assert not caught, [str(w.message) for w in caught]
    assert comm.steps == 3 * 5 + 3, comm.steps

    # bcast_data by itself, and AverageGrads given the model.
    model = mlp((6, 3), seed=20 + comm.rank)
    changed = comm.bcast_data(model)
    assert changed == (comm.size > 1)
    assert_same_on_all_ranks(values_of(model), "bcast_data")
    assert comm.bcast_data(model) is False
    opt = optimizers.SGD(lr=0.5).setup(model)
    opt.add_hook(AverageGrads(comm, model))
    for step in range(2):
        loss = F.softmax_cross_entropy(model(batch(comm.rank, step=step)[0]), batch(0)[1])
        model.cleargrads()
        loss.backward()
        opt.update()
        assert_same_on_all_ranks(values_of(model), f"AverageGrads(model) step {step}")

    total = comm.allreduce(float(comm.rank + 1))
    assert total == comm.size * (comm.size + 1) / 2, total
    arr = comm.allreduce(np.arange(3.0) * (comm.rank + 1), op="max")
    assert np.array_equal(arr, np.arange(3.0) * comm.size), arr
    if comm.rank == 0:
        print("PASS updates", flush=True)


class Numbers(dezero.Dataset):
    """Example i is (i, i): the data say which example was drawn."""

    def __init__(self, n):
        self.n = n
        super().__init__()

    def prepare(self):
        self.data = np.arange(self.n)
        self.label = np.arange(self.n)


def case_scatter():
    comm = create_communicator()
    size = comm.size
    for n in (size, size + 1, 2 * size - 1, 7, 300, 301):
        for remainder in ("uneven", "drop", "repeat"):
            for shuffle in (True, False):
                seed = 5 if shuffle else None
                share = scatter_dataset(Numbers(n), comm, shuffle=shuffle, seed=seed,
                                        remainder=remainder)
                for epoch in range(3):
                    share.set_epoch(epoch)
                    loader = DataLoader(share, batch_size=4, shuffle=epoch == 2)
                    mine = [int(v) for x, t in loader for v in x]
                    assert mine == sorted(mine) or shuffle or epoch == 2 or remainder == \
                        "repeat", mine
                    everyone = WORLD.allgather(mine)
                    flat = sorted(v for e in everyone for v in e)
                    lengths = [len(e) for e in everyone]
                    what = (n, remainder, shuffle, epoch, lengths)
                    if remainder == "uneven":
                        assert flat == list(range(n)), what
                        assert lengths == [n // size + (r < n % size) for r in range(size)], what
                    elif remainder == "drop":
                        assert len(set(flat)) == len(flat) == n - n % size, what
                        assert set(lengths) == {n // size}, what
                    else:
                        assert set(flat) == set(range(n)), what
                        assert len(flat) == n + (-n) % size, what
                        assert set(lengths) == {-(-n // size)}, what
                    # The global order of the epoch, dealt round-robin: the
                    # union of the ranks' k-th batches is the k-th batch of
                    # one process with a size-times larger batch.
                    if remainder != "repeat" and epoch < 2:
                        order = share.permutation(epoch)
                        if remainder == "drop":
                            order = order[:n - n % size]
                        for k in range(0, len(order), 4 * size):
                            got = sorted(v for e in everyone for v in e[k // size:k // size + 4])
                            assert got == sorted(int(i) for i in order[k:k + 4 * size]), what
                if shuffle:
                    orders = {tuple(share.permutation(e)) for e in range(3)}
                    assert len(orders) == 3 or n <= 2, (n, "epochs reuse an order")
    # Without a seed, rank 0's drawn seed is shared: the shares still cover.
    share = scatter_dataset(Numbers(50), comm)
    everyone = WORLD.allgather([int(share[i][0]) for i in range(len(share))])
    assert sorted(v for e in everyone for v in e) == list(range(50))
    if size > 1:
        for bad in (dict(remainder="uneven"), dict(remainder="drop")):
            try:
                scatter_dataset(Numbers(size - 1), comm, **bad)
            except ValueError as exc:
                assert "at least one" in str(exc), exc
            else:
                raise AssertionError("a rank without examples was accepted")
    if comm.rank == 0:
        print("PASS scatter", flush=True)


# =============================================================================
# failing programs
# =============================================================================
def train_steps(comm, model, steps, rank_batch=True):
    opt = create_multi_node_optimizer(optimizers.SGD(lr=0.1), comm).setup(model)
    for step in range(steps):
        x, t = batch(comm.rank if rank_batch else 0, step=step, dtype=model.layers[0].dtype)
        loss = F.softmax_cross_entropy(model(x), t)
        model.cleargrads()
        loss.backward()
        opt.update()
    return opt


def case_fail_raise():
    comm = create_communicator()
    if comm.rank == 1:
        raise RuntimeError("rank 1 fails on purpose")
    train_steps(comm, mlp((5, 3)), 3)


def case_fail_raise_no_hook():
    # Without the excepthook, the failing rank's exit handshake still frees
    # the others from their wait.
    comm = create_communicator(abort_on_error=False)
    if comm.rank == 1:
        raise RuntimeError("rank 1 fails on purpose")
    train_steps(comm, mlp((5, 3)), 3)


def case_fail_shape():
    comm = create_communicator()
    train_steps(comm, mlp((5 + (comm.rank == 1), 3)), 3)


def case_fail_dtype():
    comm = create_communicator()
    train_steps(comm, mlp((5, 3), np.float32 if comm.rank == 1 else np.float64), 3)


def case_fail_missing_grad():
    comm = create_communicator()
    model = mlp((5, 3))
    opt = create_multi_node_optimizer(optimizers.SGD(lr=0.1), comm).setup(model)
    if comm.rank == 1:
        opt.hooks.insert(0, optimizers.FreezeParam(model.l1.b))
    x, t = batch(comm.rank)
    loss = F.softmax_cross_entropy(model(x), t)
    model.cleargrads()
    loss.backward()
    opt.update()


def case_fail_steps():
    comm = create_communicator()
    train_steps(comm, mlp((5, 3)), 4 - (comm.rank == 1))


def case_fail_exit():
    comm = create_communicator()
    if comm.rank == 1:
        sys.exit(0)
    train_steps(comm, mlp((5, 3)), 3)


def case_fail_scatter_length():
    comm = create_communicator()
    scatter_dataset(Numbers(300 - comm.rank), comm, seed=0)


def case_fail_timeout():
    comm = create_communicator(timeout=2)
    if comm.rank == 1:
        time.sleep(60)
    train_steps(comm, mlp((5, 3)), 1)


if __name__ == "__main__":
    globals()["case_" + sys.argv[1].replace("-", "_")]()
