"""Gradient descent on the Rosenbrock function, the book's step-28 loop.

The loop below is plain DeZero code.  It runs unchanged on fastgrad (the
default) and on DeZero itself (``--dezero``, needs ``pip install
dezero==0.0.13``), and prints the same minimiser; the time goes to stderr.

    python examples/rosenbrock.py [--iters 10000] [--dezero]
"""
import argparse
import sys
import time

import numpy as np


def rosenbrock(x0, x1):
    y = 100 * (x1 - x0 ** 2) ** 2 + (x0 - 1) ** 2
    return y


def minimise(dezero, iters, lr=0.001):
    x0 = dezero.Variable(np.array(0.0))
    x1 = dezero.Variable(np.array(2.0))
    for i in range(iters):
        y = rosenbrock(x0, x1)
        x0.cleargrad()
        x1.cleargrad()
        y.backward()
        x0.data -= lr * x0.grad
        x1.data -= lr * x1.grad
    return x0, x1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=10_000)
    parser.add_argument("--dezero", action="store_true", help="run on DeZero stage 2 instead")
    args = parser.parse_args(argv)
    if args.dezero:
        np.int = int  # dezero 0.0.13 still uses np.int, removed in NumPy 1.24
        import dezero.core_simple as dezero
        dezero.setup_variable()
    else:
        import fastgrad as dezero
    start = time.perf_counter()
    x0, x1 = minimise(dezero, args.iters)
    elapsed = time.perf_counter() - start
    print(x0, x1)
    print(f"{'dezero' if args.dezero else 'fastgrad'}: {args.iters} iterations "
          f"in {elapsed:.3f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
