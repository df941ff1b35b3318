"""Threads: independent graphs in parallel, and per-thread ``no_grad``.

``Config.enable_backprop`` is documented as thread-local: ``no_grad()`` in
one thread must never turn recording off in another, and overlapping
(non-nested) ``no_grad`` blocks in two threads must each restore their own
thread's state.  The interleavings are forced with Events/Barriers, not left
to the scheduler.
"""
import sys
import threading

import numpy as np
import pytest

import fastgrad as fg

TIMEOUT = 30


class Square(fg.Function):
    def forward(self, x):
        return x * x

    def backward(self, gy):
        return 2 * self.inputs[0].data * gy


class Mix(fg.Function):
    """Two inputs, two outputs, a little Python work in backward."""

    def forward(self, a, b):
        return a * b, a - b

    def backward(self, g0, g1):
        a, b = self.inputs[0].data, self.inputs[1].data
        return g0 * b + g1, g0 * a - g1


def workload(seed):
    """A deterministic mixed graph (arrays, 0-d float64 scalars, user
    functions); returns all grads as a tuple of arrays."""
    rng = np.random.default_rng(seed)
    x = fg.Variable(rng.uniform(0.5, 1.5, size=(4, 3)))
    w = fg.Variable(rng.uniform(0.5, 1.5, size=(3,)))
    s = fg.Variable(np.array(rng.uniform(0.5, 1.5)))
    t = fg.Variable(np.array(rng.uniform(0.5, 1.5), dtype=np.float32))
    h = x
    for i in range(20):
        p, q = Mix()(h, w)
        h = Square()(p) / (q * q + 1.0) + s * (i % 3) - h
        s = s * 0.9 + s ** 2 / (s + 1.0)
        t = t * 0.5 + t ** 2 * 0.25
    loss = h * s + t * 3.0
    loss.backward()
    assert np.all(np.isfinite(loss.data)) and np.all(np.isfinite(x.grad))
    return tuple(np.array(v.grad) for v in (x, w)) + (np.array(float(s.data)),)


def run_threads(n, target, *args):
    errors = []

    def wrap(i):
        try:
            target(i, *args)
        except BaseException as e:   # pragma: no cover - reported below
            errors.append((i, e))

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)          # switch threads as often as possible
    try:
        threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(TIMEOUT)
        assert not any(th.is_alive() for th in threads), "a thread hung"
    finally:
        sys.setswitchinterval(old)
    if errors:
        raise errors[0][1]


def test_concurrent_backward_matches_serial():
    seeds = list(range(8))
    serial = {s: workload(s) for s in seeds}
    got = {}
    barrier = threading.Barrier(8)

    def worker(i):
        barrier.wait(TIMEOUT)
        for rep in range(5):
            res = workload(seeds[i])
            if rep == 0:
                got[i] = res
            for a, b in zip(res, serial[seeds[i]]):
                np.testing.assert_array_equal(a, b)

    run_threads(8, worker)
    assert sorted(got) == seeds


def test_concurrent_user_functions_backward_once_each():
    """Each thread's backward calls only its own functions, once each."""
    barrier = threading.Barrier(8)

    class Count(fg.Function):
        def __init__(self, log):
            self.log = log

        def forward(self, x):
            return x + 1.0

        def backward(self, gy):
            self.log.append(self)
            return gy

    def worker(i):
        log = []
        x = fg.Variable(np.full(3, float(i)))
        fs = []
        y = x
        for _ in range(50):
            f = Count(log)
            fs.append(f)
            y = f(y) * 1.0
        barrier.wait(TIMEOUT)
        y.backward()
        assert log == fs[::-1]
        np.testing.assert_array_equal(x.grad, np.ones(3))

    run_threads(8, worker)


def test_no_grad_is_per_thread_overlapping_blocks():
    """A enters no_grad, B enters no_grad, A leaves, B records nothing, B
    leaves: both end with recording on, and A records again while B is
    still inside its block."""
    a_in, b_in, a_out, b_checked = (threading.Event() for _ in range(4))
    results = {}

    def thread_a(_):
        x = fg.Variable(np.array(1.0))
        with fg.no_grad():
            assert fg.Config.enable_backprop is False
            a_in.set()
            assert b_in.wait(TIMEOUT)
            assert (x * 2.0).creator is None
        # Left while B is still inside its own no_grad block.
        results["a_after"] = fg.Config.enable_backprop
        results["a_records"] = (x * 2.0).creator is not None
        a_out.set()
        assert b_checked.wait(TIMEOUT)
        results["a_end"] = fg.Config.enable_backprop

    def thread_b(_):
        x = fg.Variable(np.ones(2))
        assert a_in.wait(TIMEOUT)
        # A is inside no_grad: this thread still records.
        results["b_before"] = fg.Config.enable_backprop
        results["b_records_before"] = (x * 2.0).creator is not None
        with fg.no_grad():
            b_in.set()
            assert a_out.wait(TIMEOUT)
            # A has left its block: that must not turn this one back on.
            results["b_inside"] = fg.Config.enable_backprop
            results["b_records_inside"] = (x * 2.0).creator is not None
        results["b_after"] = fg.Config.enable_backprop
        b_checked.set()

    def target(i):
        (thread_a if i == 0 else thread_b)(i)

    run_threads(2, target)
    assert results == {
        "a_after": True, "a_records": True, "a_end": True,
        "b_before": True, "b_records_before": True,
        "b_inside": False, "b_records_inside": False, "b_after": True,
    }
    assert fg.Config.enable_backprop is True


def test_no_grad_in_one_thread_never_disables_another():
    stop = threading.Event()
    inside = threading.Event()
    seen_off = []

    def toggler(_):
        for _ in range(2000):
            with fg.no_grad():
                inside.set()
                with fg.using_config("enable_backprop", False):
                    pass
        stop.set()

    def recorder(_):
        assert inside.wait(TIMEOUT)
        x = fg.Variable(np.array(2.0))
        v = fg.Variable(np.ones(3))
        while not stop.is_set():
            if not fg.Config.enable_backprop:
                seen_off.append("flag")
            if (x * 3.0).creator is None or (v + 1.0).creator is None:
                seen_off.append("graph")
        assert fg.Config.enable_backprop

    def target(i):
        (toggler if i == 0 else recorder)(i)

    run_threads(3, target)
    assert not seen_off, seen_off[:5]


def test_shared_no_grad_object_across_threads():
    """One context-manager object entered in two threads at once."""
    ctx = fg.no_grad()
    both_in = threading.Barrier(2)
    first_out = threading.Event()
    states = {}

    def target(i):
        with ctx:
            both_in.wait(TIMEOUT)
            if i == 0:
                pass
            else:
                assert first_out.wait(TIMEOUT)
                states["inner_1"] = fg.Config.enable_backprop
        if i == 0:
            first_out.set()
        states[f"after_{i}"] = fg.Config.enable_backprop

    run_threads(2, target)
    assert states == {"inner_1": False, "after_0": True, "after_1": True}


def test_new_thread_starts_with_recording_on():
    with fg.no_grad():
        out = {}
        th = threading.Thread(target=lambda: out.setdefault("flag", fg.Config.enable_backprop))
        th.start()
        th.join(TIMEOUT)
        assert fg.Config.enable_backprop is False
    assert out == {"flag": True}
    assert fg.Config.enable_backprop is True


@pytest.mark.parametrize("n", [8])
def test_concurrent_scalar_chains(n):
    """The 0-d float64 path (C doubles) under thread switches."""
    barrier = threading.Barrier(n)

    def chain(v):
        x = fg.Variable(np.array(v))
        y = x
        for _ in range(300):
            y = y * 1.001 + 0.5 - y / 3.0
        y.backward()
        return float(x.grad), float(y.data)

    serial = [chain(0.1 * i) for i in range(n)]

    def worker(i):
        barrier.wait(TIMEOUT)
        for _ in range(10):
            assert chain(0.1 * i) == serial[i]

    run_threads(n, worker)
