"""`python -m timbreamt ...`: the same as the `timbreamt` command."""
import sys

from .cli import main

sys.exit(main())
