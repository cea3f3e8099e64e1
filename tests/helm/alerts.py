"""The chart's alerts as Prometheus runs them: the PrometheusRule's groups taken from
``helm template`` (so the tests test what ships), written to a rules file, and Prometheus'
own rule engine on it through ``promtool check rules`` and ``promtool test rules``.

A :class:`Case` is one promtool test group: input series, and at each evaluation time the
alerts expected to fire (none: the alert must stay silent). :func:`failures` reads promtool's
report back, so a test can show that each expectation is checked: inverted, it fails."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.helm import helm_tool
from tests.helm.helm_tool import Helm, Obj, one
from tests.integration import services

PROMTOOL_BINARY = "/usr/bin/promtool"
#: The default values.yaml's metrics.prometheusRule.runbookURL.
RUNBOOK = "https://github.com/kubevision/kubevision/blob/main/docs/helm.md"
#: Every alert the chart ships (with a Pushgateway and an operator replica).
ALERTS = frozenset(
    {
        "KubevisionOperatorDown",
        "KubevisionOperatorReconcileStalled",
        "KubevisionOperatorWatchSilent",
        "KubevisionModelVersionFailed",
        "KubevisionTrainingStalled",
        "KubevisionPushgatewayGroupStale",
    }
)
#: One failed expectation in promtool's report: its test group, alert and evaluation time.
FAILURE = re.compile(
    r"name: (?P<name>[^,\n]+),\s*alertname: (?P<alert>\w+), time: (?P<at>[^,\s]+),"
)


def promtool() -> Path:
    """``promtool`` (Debian's prometheus package), or skip/fail saying how to install it."""
    path = services.find_binary("promtool", PROMTOOL_BINARY)
    if path is None:
        helm_tool.missing("promtool: run scripts/install-system-deps (Debian's prometheus)")
    return path


def rule_groups(helm: Helm, values: Obj, tmp_path: Path) -> list[Obj]:
    """The rendered PrometheusRule's ``spec.groups``, as a Prometheus rules file holds them."""
    groups: list[Obj] = one(helm.template(values, tmp_path=tmp_path), "PrometheusRule")["spec"][
        "groups"
    ]
    return groups


def rules_by_alert(groups: list[Obj]) -> dict[str, Obj]:
    """Every alerting rule of ``groups`` by its alert name."""
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def write_rules(groups: list[Obj], workdir: Path) -> Path:
    """A rules file (``groups:``) holding ``groups``, in ``workdir``."""
    path = workdir / "kubevision-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8")
    return path


def run(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``promtool args...``; stdout and stderr together in ``stdout`` (its report is split
    across both)."""
    return subprocess.run(
        [str(binary), *args],
        check=False,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )


@dataclass(frozen=True)
class Case:
    """One promtool test group.

    Attributes:
        name: unique among the cases of one run (promtool reports failures by it).
        alert: the alert every evaluation checks.
        series: input series (selector -> promtool's expanding notation), one sample a minute.
        evals: evaluation time -> the alerts expected then, each ``{"labels": ...,
            "annotations": ...}`` (alertname is implied); empty: silent.
    """

    name: str
    alert: str
    series: dict[str, str]
    evals: dict[str, list[Obj]]

    def test_group(self, *, invert: bool = False) -> Obj:
        """The promtool test group; ``invert``: every expectation wrong (a firing alert
        expected silent, a silent one expected to fire with a severity no alert has)."""
        checks = []
        for at, wanted in self.evals.items():
            expected = wanted
            if invert:
                expected = [] if wanted else [{"labels": {"severity": "none"}}]
            checks.append(
                {
                    "eval_time": at,
                    "alertname": self.alert,
                    "exp_alerts": [
                        {"exp_labels": a["labels"], "exp_annotations": a.get("annotations", {})}
                        for a in expected
                    ],
                }
            )
        return {
            "name": self.name,
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in self.series.items()],
            "alert_rule_test": checks,
        }


def unit_test(
    binary: Path, rules: Path, groups: list[Obj], workdir: Path
) -> subprocess.CompletedProcess[str]:
    """``promtool test rules`` of the test ``groups`` against the ``rules`` file."""
    path = workdir / f"tests-{len(list(workdir.glob('tests-*.yaml')))}.yaml"
    document: dict[str, Any] = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": groups,
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return run(binary, "test", "rules", str(path))


def failures(report: str) -> set[tuple[str, str, str]]:
    """The failed expectations of a promtool report: (test group, alert, evaluation time)."""
    return {(m["name"], m["alert"], m["at"]) for m in FAILURE.finditer(report)}
