"""fastgrad.dezero.distributed under a real MPI: each test launches ``mpirun``.

The programs live in ``mpi_worker.py`` (beside this file) and in
``examples/distributed_*.py``; every launch has a timeout and runs in its
own process group, so a hang fails the test and leaves no rank behind.
MPI itself is never imported into the pytest process (Open MPI's singleton
start would leave its environment to the ``mpirun`` children).

Needs ``mpirun`` (Debian/Ubuntu: ``apt-get install openmpi-bin
libopenmpi-dev``) and mpi4py (``pip install 'fastgrad[mpi]'``); without
them the MPI tests skip and say what to install.
"""
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
WORKER = HERE / "mpi_worker.py"
EXAMPLES = HERE.parent / "examples"
TIMEOUT = 120

MPIRUN = shutil.which("mpirun") or shutil.which("mpiexec")
HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None

needs_mpi = pytest.mark.skipif(
    MPIRUN is None or not HAVE_MPI4PY,
    reason=("mpirun not found: install an MPI implementation (Debian/Ubuntu: "
            "apt-get install openmpi-bin libopenmpi-dev)" if MPIRUN is None else
            "mpi4py is not installed: pip install 'fastgrad[mpi]' (or pip install mpi4py)"))


def mpi_env():
    env = dict(os.environ)
    # Open MPI refuses to start as root without these, and counts slots by
    # cores: -n 3 on two cores (or -n 2 on one) needs oversubscription.
    # MPICH ignores them.
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
    # One BLAS thread per rank: the ranks share the machine's cores.
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


class Run:
    def __init__(self, returncode, output, seconds):
        self.returncode, self.output, self.seconds = returncode, output, seconds


def launch(args, timeout=TIMEOUT):
    """Run ``args`` in a new process group; kill the whole group on timeout."""
    start = time.monotonic()
    proc = subprocess.Popen(args, cwd=HERE, env=mpi_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"{' '.join(map(str, args))} did not end within {timeout} s:\n{output}")
    return Run(proc.returncode, output, time.monotonic() - start)


def mpirun(n, *args, timeout=TIMEOUT):
    return launch([MPIRUN, "-n", str(n), sys.executable, *map(str, args)], timeout)


@pytest.fixture(scope="module")
def mpi_works():
    run = mpirun(2, "-c", "from mpi4py import MPI; c = MPI.COMM_WORLD; "
                 "print('rank', c.Get_rank(), 'of', c.Get_size())", timeout=60)
    if run.returncode != 0 or "of 2" not in run.output:
        pytest.fail(f"{MPIRUN} -n 2 cannot run mpi4py (exit {run.returncode}):\n{run.output}")


def passes(run, case):
    assert run.returncode == 0 and f"PASS {case}" in run.output, run.output


# =============================================================================
# without MPI
# =============================================================================
def test_import_does_not_load_mpi4py():
    code = ("import sys, fastgrad.dezero, fastgrad.dezero.distributed; "
            "print(sorted(m for m in sys.modules if m.startswith('mpi4py')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=HERE, capture_output=True,
                         text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
    code = "import sys, fastgrad.dezero; print('fastgrad.dezero.distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=HERE, capture_output=True,
                         text=True, timeout=TIMEOUT)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def test_missing_mpi4py_names_the_install():
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "from fastgrad.dezero.distributed import create_communicator\n"
            "try:\n    create_communicator()\n"
            "except ImportError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=HERE, capture_output=True,
                         text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr
    assert "mpi4py" in out.stdout and "pip install 'fastgrad[mpi]'" in out.stdout, out.stdout
    assert "apt-get install openmpi-bin" in out.stdout, out.stdout


# =============================================================================
# under mpirun
# =============================================================================
def mpirun_hash_seeds(case, hash_seeds=(0, 1)):
    """One rank per PYTHONHASHSEED (MPMD launch): their Layer.params() orders differ."""
    args = []
    for rank, hash_seed in enumerate(hash_seeds):
        args += ([":"] if rank else []) + ["-n", "1", "env", f"PYTHONHASHSEED={hash_seed}",
                                           sys.executable, str(WORKER), case]
    return launch([MPIRUN, *args])


@needs_mpi
def test_grads_are_the_exact_mean_of_two_ranks(mpi_works):
    run = mpirun_hash_seeds("average")
    passes(run, "average")
    orders = re.findall(r"params\(\) order on rank \d: (.*)", run.output)
    assert len(orders) == 2 and orders[0] != orders[1], run.output


@needs_mpi
@pytest.mark.parametrize("n", [1, 3])
def test_grads_are_the_mean_of_n_ranks(mpi_works, n):
    passes(mpirun(n, WORKER, "average"), "average")


@needs_mpi
def test_updates_keep_two_ranks_identical(mpi_works):
    passes(mpirun_hash_seeds("updates"), "updates")


@needs_mpi
@pytest.mark.parametrize("n", [1, 3])
def test_updates_keep_n_ranks_identical(mpi_works, n):
    passes(mpirun(n, WORKER, "updates"), "updates")


@needs_mpi
@pytest.mark.parametrize("n", [1, 2, 3])
def test_scatter_dataset_covers_every_example(mpi_works, n):
    passes(mpirun(n, WORKER, "scatter"), "scatter")


def load_run(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


@needs_mpi
@pytest.mark.parametrize("script, per_rank, extra, rtol", [
    ("distributed_spiral.py", 30, [], 1e-12),
    ("distributed_mnist.py", 50, ["--n", "1000", "--epochs", "2", "--hidden", "100",
                                  "--dtype", "float64"], 1e-11),
])
def test_two_ranks_follow_one_process_with_double_batch(mpi_works, tmp_path, script,
                                                       per_rank, extra, rtol):
    two, one = tmp_path / "two.npz", tmp_path / "one.npz"
    run2 = mpirun(2, EXAMPLES / script, "--batch-size", per_rank, *extra, "--out", two)
    assert run2.returncode == 0 and "2 process(es)" in run2.output, run2.output
    # One process started without mpirun (MPI's singleton start).
    run1 = launch([sys.executable, str(EXAMPLES / script), "--batch-size", str(2 * per_rank),
                   *extra, "--out", str(one)])
    assert run1.returncode == 0 and "1 process(es)" in run1.output, run1.output
    a, b = load_run(one), load_run(two)
    assert a.keys() == b.keys()
    # Equal up to the order of the sums (each rank sums half the rows of a
    # batch), not bit for bit; far below float32's resolution.
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=rtol, atol=rtol, err_msg=name)
    assert a["losses"][-1] < a["losses"][0]


@needs_mpi
@pytest.mark.parametrize("case, message", [
    ("fail-raise", r"RuntimeError: rank 1 fails on purpose"),
    ("fail-raise-no-hook", r"rank 0 is averaging gradients .* rank 1 is finished"),
    ("fail-shape", r"ValueError: averaging gradients: parameter 'l0\.W' has shape \(4, 5\) "
                   r"float64 on rank 0 but shape \(4, 6\) float64 on rank 1"),
    # Under DeZero's dtype rules a float32 Linear has float64 weights and a
    # float32 bias: the bias is the first parameter that differs.
    ("fail-dtype", r"ValueError: broadcasting parameters before their first update: "
                   r"parameter 'l0\.b' has shape \(5,\) float64 on rank 0 but shape \(5,\) "
                   r"float32 on rank 1"),
    ("fail-missing-grad", r"parameter 'l1\.b' has shape \(3,\) float64 on rank 0 but no "
                          r"gradient on rank 1"),
    ("fail-steps", r"rank 0 is averaging gradients after 3 optimizer steps; rank 1 is "
                   r"finished"),
    ("fail-exit", r"rank 0 is averaging gradients after 0 optimizer steps; rank 1 is "
                  r"finished"),
    ("fail-scatter-length", r"scatter_dataset: the dataset's length is 300 on rank 0 but "
                            r"299 on rank 1"),
    ("fail-timeout", r"TimeoutError: rank 0 of 2 waited 2 s for the other ranks"),
])
def test_faults_end_the_job_with_the_error(mpi_works, case, message):
    run = mpirun(2, WORKER, case)
    assert run.returncode != 0, run.output
    assert re.search(message, run.output), run.output
    assert "aborting all ranks" in run.output, run.output
