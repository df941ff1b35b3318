"""Newton's method with second derivatives by double backprop (the book's step 33).

``y.backward(create_graph=True)`` records the backward pass, so the first
derivative ``x.grad`` is itself a Variable that can be differentiated again.
The loop below is plain DeZero code for f(x) = x**4 - 2 x**2.  It runs
unchanged on fastgrad (``fastgrad.dezero``, the default) and on DeZero itself
(``--dezero``, needs ``pip install dezero==0.0.13``), and prints the same
sequence 2.0, 1.4545..., ..., 1.0; the time goes to stderr.

    python examples/newton.py [--iters 10] [--x0 2.0] [--dezero]
"""
import argparse
import sys
import time

import numpy as np


def f(x):
    y = x ** 4 - 2 * x ** 2
    return y


def newton(dezero, x0, iters):
    x = dezero.Variable(np.array(x0))
    for i in range(iters):
        print(i, x)
        y = f(x)
        x.cleargrad()
        y.backward(create_graph=True)

        gx = x.grad
        x.cleargrad()
        gx.backward()
        gx2 = x.grad

        x.data -= gx.data / gx2.data
    return x


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--x0", type=float, default=2.0, help="starting point")
    parser.add_argument("--dezero", action="store_true", help="run on DeZero 0.0.13 instead")
    args = parser.parse_args(argv)
    if args.dezero:
        np.int = int  # dezero 0.0.13 still uses np.int, removed in NumPy 1.24
        import dezero
    else:
        import fastgrad.dezero as dezero
    start = time.perf_counter()
    newton(dezero, args.x0, args.iters)
    elapsed = time.perf_counter() - start
    print(f"{'dezero' if args.dezero else 'fastgrad'}: {args.iters} Newton steps "
          f"in {elapsed * 1e3:.2f} ms", file=sys.stderr)


if __name__ == "__main__":
    main()
