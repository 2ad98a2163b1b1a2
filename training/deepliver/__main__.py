"""``python -m deepliver`` runs the command line."""

import sys

from deepliver.cli import main

if __name__ == "__main__":
    sys.exit(main())
