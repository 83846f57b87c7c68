"""`python -m flmn_np.data check|show ...`: the data command (see data.cli)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
