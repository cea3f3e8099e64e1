"""``python -m kubevision_cli``: the ``kubevision`` command without its console script."""

import sys

from kubevision_cli import main

sys.exit(main.main())
