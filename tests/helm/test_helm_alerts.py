"""The chart's alerts in Prometheus' own rule engine: the PrometheusRule that `helm template`
renders is written to a rules file, `promtool check rules` accepts it, and `promtool test
rules` runs every case of tests/helm/alert_cases.py against it: each alert fires, with its
labels and annotations, where its condition holds, and stays silent in the near misses.
Every expectation is shown to be checked: inverted, promtool reports exactly it as failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helm import alerts, dashboards, helm_tool
from tests.helm.alert_cases import DEFAULT, TUNED_CASES
from tests.helm.alert_series import MONITORED, TUNED
from tests.helm.alerts import ALERTS, Case
from tests.helm.helm_tool import Obj

PROFILES: dict[str, tuple[Obj, list[Case]]] = {
    "defaults": (MONITORED, DEFAULT),
    "tuned": (TUNED, TUNED_CASES),
}


@pytest.fixture(scope="module")
def promtool() -> Path:
    return alerts.promtool()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[Obj], Path]]:
    """Each profile's rule groups, and the rules file holding them (Helm 3 renders: the
    chart tests compare both Helm versions' output elsewhere)."""
    helm = helm_tool.get(min(helm_tool.VERSIONS))
    out = {}
    for name, (values, _) in PROFILES.items():
        workdir = tmp_path_factory.mktemp(f"alerts-{name}")
        groups = alerts.rule_groups(helm, values, workdir)
        out[name] = (groups, alerts.write_rules(groups, workdir))
    return out


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_promtool_checks_the_rules(
    promtool: Path, rendered: dict[str, tuple[list[Obj], Path]], profile: str
) -> None:
    groups, path = rendered[profile]
    result = alerts.run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout, result.stdout
    assert set(alerts.rules_by_alert(groups)) == ALERTS


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_each_alert_fires_and_stays_silent_as_expected(
    promtool: Path, rendered: dict[str, tuple[list[Obj], Path]], profile: str, tmp_path: Path
) -> None:
    _, path = rendered[profile]
    cases = PROFILES[profile][1]
    result = alerts.unit_test(promtool, path, [c.test_group() for c in cases], tmp_path)
    assert result.returncode == 0, result.stdout
    assert "SUCCESS" in result.stdout and "FAILED" not in result.stdout, result.stdout


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_expectation_is_checked(
    promtool: Path, rendered: dict[str, tuple[list[Obj], Path]], profile: str, tmp_path: Path
) -> None:
    """Each case inverted (firing expected silent, silent expected to fire): promtool fails,
    naming every evaluation of every case, and nothing else."""
    _, path = rendered[profile]
    cases = PROFILES[profile][1]
    result = alerts.unit_test(promtool, path, [c.test_group(invert=True) for c in cases], tmp_path)
    assert result.returncode == 1, result.stdout
    expected = {(c.name, c.alert, at) for c in cases for at in c.evals}
    assert alerts.failures(result.stdout) == expected


def test_cases_cover_every_alert_both_ways() -> None:
    """Every alert has a case where it fires and one where it stays silent, by default and
    with moved thresholds; case names are unique (promtool reports failures by them)."""
    for cases in (DEFAULT, TUNED_CASES):
        names = [c.name for c in cases]
        assert len(set(names)) == len(names)
        fires = {c.alert for c in cases if any(c.evals.values())}
        silent = {c.alert for c in cases if any(not e for e in c.evals.values())}
        assert fires == ALERTS, ALERTS - fires
        assert silent == ALERTS, ALERTS - silent
        for case in cases:
            for expected in case.evals.values():
                for alert in expected:
                    assert set(alert["annotations"]) == {"summary", "description", "runbook_url"}


def test_alert_metrics_are_the_code_s(rendered: dict[str, tuple[list[Obj], Path]]) -> None:
    """Every kubevision_* metric an alert reads is one the operator's or the trainer's
    registry exports, and every one an alert case feeds is read by the alerts."""
    exported = dashboards.exported_names(dashboards.operator_registry()) | (
        dashboards.exported_names(dashboards.trainer_registry())
    )
    groups, _ = rendered["defaults"]
    read = {
        name
        for rule in alerts.rules_by_alert(groups).values()
        for name in dashboards.METRIC.findall(rule["expr"])
    }
    assert read, "no kubevision_* metric in the alerts"
    assert read <= exported, read - exported
    fed = {
        name
        for case in DEFAULT + TUNED_CASES
        for series in case.series
        for name in dashboards.METRIC.findall(series)
    }
    assert fed <= read, fed - read
