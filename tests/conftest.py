"""Suite-wide pytest configuration.

- The repository root goes on ``sys.path`` so that test helpers import as
  ``tests.<folder>.<module>`` under plain ``pytest`` as under ``python -m pytest``.
- Every test under ``tests/integration/`` gets the ``integration`` marker
  (``-m "not integration"`` runs the unit tests alone).
- The header names the servers the integration tests will use.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INTEGRATION = ROOT / "tests" / "integration"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return ROOT


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests under ``tests/integration/`` as ``integration``."""
    for item in items:
        if item.path.is_relative_to(INTEGRATION):
            item.add_marker(pytest.mark.integration)


def pytest_report_header() -> list[str]:
    """The server binaries found for the integration tests."""
    from tests.integration import services

    found = {
        "weed": services.find_weed(),
        "moto_server": services.find_moto_server(),
        "prometheus": services.find_binary("prometheus", services.PROMETHEUS_BINARY),
        "prometheus-pushgateway": services.find_binary(
            "prometheus-pushgateway", services.PUSHGATEWAY_BINARY
        ),
    }
    return ["integration servers: " + ", ".join(f"{k}={v or 'MISSING'}" for k, v in found.items())]
