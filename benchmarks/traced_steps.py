"""A DeZero-style training step (model, loss, cleargrads, backward, update):
DeZero 0.0.13, fastgrad.dezero eager, and the same step under fastgrad.trace.

    python benchmarks/traced_steps.py [--rounds 7] [--threads 1] [--json FILE]

Every measurement runs in a fresh subprocess (in one process, the model
built second ran slower whatever its mode), the modes in a rotating order
within each round; the table gives the medians over the rounds in µs per
step and the ratios. Progress on stderr, the table on stdout.
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np

MODES = ("dezero", "eager", "traced")


def networks(dz):
    """name -> (model, optimizer, data) builders over the package ``dz``."""
    F, L = dz.functions, dz.layers

    class CNN(dz.models.Model):
        def __init__(self):
            super().__init__()
            self.conv = L.Conv2d(8, kernel_size=3, pad=1)
            self.fc = L.Linear(10)

        def forward(self, x):
            h = F.pooling(F.relu(self.conv(x)), 2, 2)
            return self.fc(F.reshape(h, (len(x), -1)))

    MLP, opt = dz.models.MLP, dz.optimizers
    return {
        "spiral MLP 2-10-3, batch 30, SGD": (
            lambda: MLP((10, 3)), lambda: opt.SGD(1.0),
            lambda: (np.random.rand(30, 2), np.random.randint(0, 3, 30))),
        "MNIST MLP 784-100-10, batch 100, MomentumSGD": (
            lambda: MLP((100, 10)), lambda: opt.MomentumSGD(0.1),
            lambda: (np.random.rand(100, 784).astype(np.float32),
                     np.random.randint(0, 10, 100))),
        "CNN conv 8x3x3 + pool + linear, batch 8 of 1x16x16, Adam": (
            CNN, lambda: opt.Adam(0.001),
            lambda: (np.random.rand(8, 1, 16, 16).astype(np.float32),
                     np.random.randint(0, 10, 8))),
    }


def package(mode):
    if mode == "dezero":
        np.int = int            # DeZero 0.0.13 still names np.int
        import dezero
        import dezero.functions, dezero.layers, dezero.models, dezero.optimizers  # noqa: E401
        return dezero
    import fastgrad.dezero
    import fastgrad.dezero.functions, fastgrad.dezero.layers  # noqa: E401
    import fastgrad.dezero.models, fastgrad.dezero.optimizers  # noqa: E401
    return fastgrad.dezero


def measure(net, mode, seconds):
    """µs per step of ``net`` in ``mode``, in this process."""
    dz = package(mode)
    make_model, make_opt, make_data = networks(dz)[net]
    np.random.seed(0)
    model = make_model()
    optimizer = make_opt().setup(model)
    x, t = make_data()

    def step(x, t):
        loss = dz.functions.softmax_cross_entropy(model(x), t)
        model.cleargrads()
        loss.backward()
        optimizer.update()
        return loss
    if mode == "traced":
        import fastgrad
        step = fastgrad.trace(step)
    for _ in range(5):
        step(x, t)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step(x, t)
        n += 1
    return (time.perf_counter() - t0) / n * 1e6


def child(args):
    if args.threads:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads)
    print(json.dumps(measure(args.child, args.mode, args.seconds)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=0.3, help="timed seconds per measurement")
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS threads in every mode (0: leave as is)")
    ap.add_argument("--json", metavar="FILE", help="also write every round's figures to FILE")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    nets = list(networks(package("eager")))
    print(f"{'network':58s} {'dezero µs':>9s} {'eager µs':>9s} {'traced µs':>9s} "
          f"{'dezero/eager':>12s} {'eager/traced':>12s}")
    record = {"command": sys.argv, "rounds": args.rounds, "seconds": args.seconds,
              "threads": args.threads, "unit": "µs per step", "networks": {}}
    for net in nets:
        times = record["networks"][net] = {m: [] for m in MODES}
        for r in range(args.rounds):
            print(f"{net}: round {r + 1}/{args.rounds}", file=sys.stderr)
            for m in MODES[r % 3:] + MODES[:r % 3]:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", net, "--mode", m,
                     "--seconds", str(args.seconds), "--threads", str(args.threads)],
                    check=True, capture_output=True, text=True).stdout
                times[m].append(json.loads(out))
        d, e, t = (statistics.median(times[m]) for m in MODES)
        print(f"{net:58s} {d:9.1f} {e:9.1f} {t:9.1f} {d / e:11.2f}x {e / t:11.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
