"""``python -m testenv.controlplane {up,down,status,build}``: what ``scripts/dev-cluster`` runs."""

from __future__ import annotations

import sys

from testenv.controlplane.devcluster import main

sys.exit(main())
