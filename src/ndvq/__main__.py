"""``python -m ndvq`` runs the ``ndvq`` command line."""

import sys

from ndvq.cli import main

if __name__ == "__main__":
    sys.exit(main())
