import sys

from fastgrad.profiling import main

sys.exit(main())
