"""``python -m fastgrad.bench``."""
import sys

from . import main

sys.exit(main())
