"""``python -m stemedb``: the same as the ``stemedb`` command."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
