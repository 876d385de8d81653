"""``python -m dataset_formats``: the dataset commands of the ``reward-plugin`` CLI."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
