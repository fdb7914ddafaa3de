"""`python -m timbreamt ...`: the same as the `timbreamt` command."""
import sys

from .cli import main

# guarded: worker processes (transcribe --jobs, started with forkserver/spawn) import the main module
if __name__ == "__main__":
    sys.exit(main())
