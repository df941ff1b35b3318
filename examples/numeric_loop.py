"""Logistic regression by gradient descent: a numeric loop of exp, sum and matmul.

Synthetic data: N points in D dimensions, labelled by a fixed hyperplane with
some label noise (``np.random.seed(0)``).  The model is p = 1 / (1 + exp(-(x W
+ b))), the loss the mean binary cross-entropy, written out with F.exp,
F.log, F.sum and F.matmul.  The loop is plain DeZero code: it runs unchanged
on fastgrad (``fastgrad.dezero``, the default) and on DeZero itself
(``--dezero``, needs ``pip install dezero==0.0.13``), and prints the same
losses; the time goes to stderr.

    python examples/numeric_loop.py [--iters 1000] [--every 100] [--n 1000] [--dim 10] [--dezero]
"""
import argparse
import sys
import time

import numpy as np


def make_data(n, dim):
    np.random.seed(0)
    x = np.random.randn(n, dim)
    w_true = np.random.randn(dim, 1)
    logits = x @ w_true + 0.5
    t = (logits + 0.5 * np.random.randn(n, 1) > 0).astype(np.float64)
    return x, t


def train(dezero, F, x, t, iters, every, lr=0.5):
    n, dim = x.shape
    x, t = dezero.Variable(x), dezero.Variable(t)
    W = dezero.Variable(np.zeros((dim, 1)))
    b = dezero.Variable(np.zeros(1))
    for i in range(iters + 1):
        z = F.matmul(x, W) + b
        p = 1 / (1 + F.exp(-z))
        loss = -F.sum(t * F.log(p + 1e-12) + (1 - t) * F.log(1 - p + 1e-12)) / n
        W.cleargrad()
        b.cleargrad()
        loss.backward()
        W.data -= lr * W.grad.data
        b.data -= lr * b.grad.data
        if i % every == 0:
            accuracy = float(np.mean((p.data > 0.5) == (t.data > 0.5)))
            print(f"{i:6d}  loss {float(loss.data):.12f}  accuracy {accuracy:.3f}")
    return W, b


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100, help="print the loss every N steps")
    parser.add_argument("--n", type=int, default=1000, help="number of data points")
    parser.add_argument("--dim", type=int, default=10, help="number of features")
    parser.add_argument("--dezero", action="store_true", help="run on DeZero 0.0.13 instead")
    args = parser.parse_args(argv)
    if args.iters < 0 or args.every < 1 or args.n < 1 or args.dim < 1:
        parser.error("--iters must be >= 0 and --every, --n, --dim >= 1")
    if args.dezero:
        np.int = int  # dezero 0.0.13 still uses np.int, removed in NumPy 1.24
        import dezero
        import dezero.functions as F
    else:
        import fastgrad.dezero as dezero
        import fastgrad.dezero.functions as F
    x, t = make_data(args.n, args.dim)
    start = time.perf_counter()
    train(dezero, F, x, t, args.iters, args.every)
    elapsed = time.perf_counter() - start
    print(f"{'dezero' if args.dezero else 'fastgrad'}: {args.iters} steps on "
          f"{args.n}x{args.dim} in {elapsed:.3f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
