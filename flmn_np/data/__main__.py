"""`python -m flmn_np.data show ...`: the data command (see datasets.main)."""
import sys

from .datasets import main

if __name__ == "__main__":
    sys.exit(main())
