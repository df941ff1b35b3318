"""A 10**6-op chain is built, backpropagated and freed without recursion.

Each case runs in a subprocess so a C-stack overflow (recursive backward or
recursive deallocation of a deep chain) fails the test instead of killing
pytest.  The recursion limit is left at its default.

Freeing is checked with the cyclic GC disabled: a weakref to the middle of
the chain must be dead after ``del y``, and ``sys.getallocatedblocks()``
(pymalloc blocks: every Python object of the graph) must be back to its
baseline within 1000 blocks -- the graph has millions of blocks, so this is a
leak of under 0.1 % of it, while tolerating interpreter-internal caches.

DeZero stage 2 (the reference) takes ~30 s for the affine chain, so it runs
only with FASTGRAD_TEST_REFERENCE=1.
"""
import os
import subprocess
import sys

import pytest

from fastgrad.profiling import workers

N = 10**6

SCRIPT = r"""
import gc, sys, weakref
import numpy as np
sys.path.insert(0, {root!r})
from fastgrad.profiling.workers import load_impl

impl = load_impl({impl!r})
assert sys.getrecursionlimit() == 1000, sys.getrecursionlimit()
gc.disable()
gc.collect()  # import-time garbage, so that the count below is the chain's alone
n = {n}
x = impl.Variable(np.array(1.0))
blocks = sys.getallocatedblocks()
y, mid = x, None
for i in range(n):
    y = {step}
    if i == n // 2:
        mid = weakref.ref(y)
y.backward()
g = float(x.grad)
del y
assert mid() is None, "the middle of the chain outlived del y"
x.cleargrad()
# Nothing was left for the collector (no cycles): a full collection then only
# empties CPython's free lists (up to 2000 tuples per size), which would
# otherwise count as blocks still allocated.
assert gc.collect() == 0, "the chain left cyclic garbage"
leaked = sys.getallocatedblocks() - blocks
assert leaked < 1000, f"{{leaked}} pymalloc blocks left after del"
print("grad", g)
"""

STEPS = {
    "neg": ("-y", 1.0),                      # (-1)**n with n even
    "affine": ("y * 1.0001 + 0.5", 1.0001 ** N),
}


@pytest.mark.parametrize("impl", ["fastgrad", "dezero"])
@pytest.mark.parametrize("op", sorted(STEPS))
def test_deep_chain(impl, op):
    if impl == "dezero" and os.environ.get("FASTGRAD_TEST_REFERENCE") != "1":
        pytest.skip("reference run is slow; set FASTGRAD_TEST_REFERENCE=1")
    if not workers.available(impl):
        pytest.skip(f"{impl} not importable")
    step, grad = STEPS[op]
    code = SCRIPT.format(root=workers.ROOT, impl=impl, n=N, step=step)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True)
    assert proc.returncode == 0, (
        f"exit {proc.returncode} (negative = killed by that signal)\n"
        f"{proc.stderr[-3000:]}")
    got = float(proc.stdout.split()[-1])
    assert got == pytest.approx(grad, rel=1e-6)
