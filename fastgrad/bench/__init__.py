"""fastgrad-bench: fastgrad against its peers, interleaved, results checked.

``python -m fastgrad.bench --help`` (or the ``fastgrad-bench`` script).
Only NumPy is required; every peer is optional and skipped, with its pip
command, when it is missing.
"""


def main(argv=None):
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    from .cli import main as _main
    return _main(argv)
