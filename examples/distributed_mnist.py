"""An MNIST-sized MLP (784-1000-10, the book's step 51) trained data-parallel over MPI.

The data are synthetic, so nothing is downloaded: ``--n`` vectors of 784
values uniform in [0, 1), each labelled by the largest of ten fixed random
linear scores (a problem an MLP learns).  Every rank builds the same data
from ``--seed`` and trains on its share; the gradients (795,010 numbers per
step) are averaged with one MPI allreduce per step.

    mpirun -n 2 python examples/distributed_mnist.py --batch-size 50
    python examples/distributed_mnist.py --batch-size 100              # one process

print the same losses up to rounding: in float32 (the default, the dtype
one trains in) to about 6 digits, with ``--dtype float64`` to about 14.
As root, Open MPI needs ``--allow-run-as-root``.

Options: --n 10000 --epochs 3 --batch-size 100 --hidden 1000 --lr 0.1
--seed 0 --dtype float32 --out FILE.npz (losses and final weights, rank 0).
Needs mpi4py and an MPI library: pip install 'fastgrad[mpi]'.
"""
import argparse
import time

import numpy as np

import fastgrad.dezero as dezero
import fastgrad.dezero.functions as F
from fastgrad.dezero import DataLoader, optimizers
from fastgrad.dezero.distributed import (
    create_communicator, create_multi_node_optimizer, named_params, scatter_dataset)
from fastgrad.dezero.models import MLP


class SyntheticMNIST(dezero.Dataset):
    """``n`` MNIST-shaped examples: 784 floats in [0, 1) and a label 0-9."""

    def __init__(self, n, seed, dtype):
        self.n, self.seed, self.dtype = n, seed, dtype
        super().__init__()

    def prepare(self):
        rng = np.random.default_rng(self.seed)
        self.data = rng.random((self.n, 784)).astype(self.dtype)
        teacher = rng.standard_normal((784, 10))
        self.label = np.argmax((self.data - 0.5) @ teacher, axis=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="number of examples")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=100, help="examples per rank per step")
    parser.add_argument("--hidden", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--out", help="rank 0 saves the losses and final weights here (.npz)")
    args = parser.parse_args()
    dtype = np.dtype(args.dtype).type

    comm = create_communicator()
    train_set = SyntheticMNIST(args.n, args.seed, dtype)
    share = scatter_dataset(train_set, comm, shuffle=True, seed=args.seed)
    loader = DataLoader(share, batch_size=args.batch_size, shuffle=False)
    np.random.seed(args.seed)          # the same initial weights on every rank
    model = MLP((args.hidden, 10), activation=F.relu)
    for layer in model.layers:         # weights of --dtype (created on the first call)
        layer.dtype = dtype
        layer.b.data = layer.b.data.astype(dtype)
    optimizer = create_multi_node_optimizer(optimizers.SGD(lr=args.lr), comm).setup(model)

    losses = []
    comm.barrier()
    start = time.perf_counter()
    for epoch in range(args.epochs):
        share.set_epoch(epoch)
        total, correct = 0.0, 0
        for x, t in loader:
            y = model(x)
            loss = F.softmax_cross_entropy(y, t)
            model.cleargrads()
            loss.backward()
            optimizer.update()
            total += float(loss.data) * len(t)
            correct += int((y.data.argmax(axis=1) == t).sum())
        losses.append(comm.allreduce(total) / len(train_set))
        accuracy = comm.allreduce(correct) / len(train_set)
        if comm.rank == 0:
            print(f"epoch {epoch + 1}: loss {losses[-1]!r} accuracy {accuracy:.4f}", flush=True)
    comm.barrier()
    elapsed = time.perf_counter() - start
    seen = comm.allreduce(args.epochs * len(share))

    if comm.rank == 0:
        print(f"{comm.size} process(es) x {args.batch_size} examples per step: "
              f"{seen / elapsed:,.0f} examples/s ({elapsed:.2f} s)", flush=True)
        if args.out:
            np.savez(args.out, losses=np.array(losses),
                     **{name: p.data for name, p in named_params(model)})


if __name__ == "__main__":
    main()
