"""The book's spiral MLP (step 49) trained data-parallel over MPI.

Each rank trains on its share of the 300 spiral points; after every
backward pass the ranks average their gradients (one MPI allreduce), so all
of them apply the same SGD update to the same weights.  Two ranks with 30
examples per step follow the trajectory of one process with 60:

    mpirun -n 2 python examples/distributed_spiral.py --batch-size 30
    python examples/distributed_spiral.py --batch-size 60          # one process

print the same losses, up to the rounding of the sums (each rank sums over
30 rows where one process sums over 60).  The parameters are float64 by
default so that this comparison is not drowned in float32 rounding
(``--dtype float32`` for the book's dtype).  As root, Open MPI needs
``--allow-run-as-root``; ``--oversubscribe`` runs more ranks than cores.

Options: --epochs 300 --batch-size 30 --hidden 10 --lr 1.0 --seed 0
--dtype float64 --every 100 --out FILE.npz (losses and final weights, rank 0).
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


def make_model(hidden, dtype):
    model = MLP((hidden, 3))
    # MLP's Linear layers create float32 weights on their first call; asking
    # them for another dtype before then gives the same draws in that dtype.
    for layer in model.layers:
        layer.dtype = dtype
        layer.b.data = layer.b.data.astype(dtype)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=30, help="examples per rank per step")
    parser.add_argument("--hidden", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("--every", type=int, default=100, help="print the loss every N epochs")
    parser.add_argument("--out", help="rank 0 saves the losses and final weights here (.npz)")
    args = parser.parse_args()
    dtype = np.dtype(args.dtype).type

    comm = create_communicator()
    # get_spiral seeds NumPy's global generator itself: build the data first.
    train_set = dezero.datasets.Spiral(train=True, transform=lambda x: x.astype(dtype))
    share = scatter_dataset(train_set, comm, shuffle=True, seed=args.seed)
    loader = DataLoader(share, batch_size=args.batch_size, shuffle=False)
    np.random.seed(args.seed)          # the same initial weights on every rank
    model = make_model(args.hidden, dtype)
    optimizer = create_multi_node_optimizer(optimizers.SGD(lr=args.lr), comm).setup(model)

    losses = []
    comm.barrier()
    start = time.perf_counter()
    for epoch in range(args.epochs):
        share.set_epoch(epoch)         # a new global order, dealt to the ranks
        total = 0.0
        for x, t in loader:
            loss = F.softmax_cross_entropy(model(x), t)
            model.cleargrads()
            loss.backward()
            optimizer.update()
            total += float(loss.data) * len(t)
        losses.append(comm.allreduce(total) / len(train_set))
        if comm.rank == 0 and args.every and (epoch + 1) % args.every == 0:
            print(epoch + 1, losses[-1], flush=True)
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
