"""fastgrad-bench: benchmark fastgrad against its peers.

Run ``python -m fastgrad.bench --help`` (or the ``fastgrad-bench`` console
script).  Only NumPy is required; every peer and matplotlib are optional.
"""


def main(argv=None):
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    from .cli import main as _main
    return _main(argv)
