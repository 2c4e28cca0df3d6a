"""`python -m lit_hpcm.cli ...`, the same as `lit-hpcm ...` (torchrun launches it this way)."""

import sys

from . import main

sys.exit(main())
