"""``python -m reward_plugin``: the ``reward-plugin`` CLI."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
