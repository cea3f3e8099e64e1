"""values.schema.json (and the chart's own checks for what a schema cannot say) refuse wrong
values at install time, with Helm 3.17 and Helm 4.1, naming the value and what is wrong.

Helm 3 spells paths `operator.replicas`, Helm 4 `/operator/replicas`: each case names the
path once and the test accepts either spelling."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helm.helm_tool import CHART, Helm, Obj, RenderError


@dataclass(frozen=True)
class Bad:
    id: str
    values: Obj
    #: Dotted path of the offending value ("" for the root).
    path: str
    #: Words the message must hold (lowercase match), besides the path.
    words: tuple[str, ...]


CASES = [
    Bad("two-replicas", {"operator": {"replicas": 2}}, "operator.replicas", ("0", "1")),
    Bad(
        "namespace-not-dns",
        {"watchNamespaces": ["Team_A"]},
        "watchNamespaces.0",
        ("pattern",),
    ),
    Bad(
        "pull-policy",
        {"trainer": {"image": {"pullPolicy": "Sometimes"}}},
        "trainer.image.pullPolicy",
        ("ifnotpresent",),
    ),
    Bad(
        "negative-limit",
        {"operator": {"concurrencyLimit": -1}},
        "operator.concurrencyLimit",
        ("0",),
    ),
    Bad(
        "limit-as-text",
        {"operator": {"concurrencyLimit": "five"}},
        "operator.concurrencyLimit",
        ("integer",),
    ),
    Bad("typo-key", {"operatr": {"replicas": 1}}, "", ("operatr",)),
    Bad("nested-typo", {"trainer": {"gpu": 1}}, "trainer", ("gpu",)),
    Bad("root-trainer", {"trainer": {"runAsUser": 0}}, "trainer.runAsUser", ("1",)),
    Bad(
        "uri-without-scheme",
        {"storage": {"baseURI": "kubevision"}},
        "storage.baseURI",
        ("pattern",),
    ),
    Bad(
        "shm-not-quantity",
        {"trainer": {"shmSizeLimit": "lots"}},
        "trainer.shmSizeLimit",
        ("pattern",),
    ),
    Bad(
        "bad-digest",
        {"operator": {"image": {"digest": "latest"}}},
        "operator.image.digest",
        ("pattern",),
    ),
    Bad(
        "alert-for-in-words",
        {"metrics": {"prometheusRule": {"alerts": {"operatorDown": {"for": "5 minutes"}}}}},
        "metrics.prometheusRule.alerts.operatorDown.for",
        ("pattern",),
    ),
    Bad(
        "alert-window-zero",
        {"metrics": {"prometheusRule": {"alerts": {"trainingStalled": {"window": "0m"}}}}},
        "metrics.prometheusRule.alerts.trainingStalled.window",
        ("not",),
    ),
    Bad(
        "alert-typo",
        {"metrics": {"prometheusRule": {"alerts": {"operatorDwn": {"for": "5m"}}}}},
        "metrics.prometheusRule.alerts",
        ("operatordwn",),
    ),
    Bad(
        "alert-label-name",
        {"metrics": {"prometheusRule": {"additionalLabels": {"on-call": "team-a"}}}},
        "metrics.prometheusRule.additionalLabels",
        ("on-call",),
    ),
    Bad(
        "alert-negative-margin",
        {
            "metrics": {
                "prometheusRule": {"alerts": {"pushgatewayGroupStale": {"marginSeconds": -1}}}
            }
        },
        "metrics.prometheusRule.alerts.pushgatewayGroupStale.marginSeconds",
        ("0",),
    ),
    Bad(
        "extra-env-name",
        {"operator": {"extraEnv": {"PATH": "/bin"}}},
        "operator.extraEnv",
        ("path", "not allowed"),
    ),
]

#: Refused by the templates' checks (kubevision.validate), with the chart's own words.
TEMPLATE_CASES = [
    (
        "watch-timeouts",
        {"operator": {"watch": {"serverTimeoutSeconds": 300, "clientTimeoutSeconds": 300}}},
        "operator.watch.clientTimeoutSeconds (300) must exceed "
        "operator.watch.serverTimeoutSeconds (300)",
    ),
    (
        "same-ports",
        {"operator": {"statusPort": 8080}},
        "operator.statusPort and operator.healthPort must differ",
    ),
    (
        "podmonitor-without-port",
        {"trainer": {"metricsPort": 0}, "metrics": {"podMonitor": {"enabled": True}}},
        "metrics.podMonitor.enabled needs trainer.metricsPort > 0",
    ),
    (
        "rule-without-operator-scrape",
        {"metrics": {"prometheusRule": {"enabled": True}}},
        "metrics.prometheusRule.enabled needs metrics.serviceMonitor.enabled, or "
        "metrics.prometheusRule.operatorJob",
    ),
    (
        "existing-sa-without-name",
        {"serviceAccount": {"create": False}},
        "serviceAccount.name is required when serviceAccount.create is false",
    ),
]


def spellings(path: str) -> list[str]:
    if not path:
        return ["(root)", "at ''"]
    return [path, "/" + path.replace(".", "/")]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_schema_refuses_with_a_clear_message(helm: Helm, tmp_path: Path, case: Bad) -> None:
    with pytest.raises(RenderError) as info:
        helm.template(case.values, tmp_path=tmp_path)
    message = str(info.value)
    assert "schema" in message, message
    assert any(s in message for s in spellings(case.path)), message
    for word in case.words:
        assert word in message.lower(), message


@pytest.mark.parametrize("case", TEMPLATE_CASES, ids=lambda c: c[0])
def test_templates_refuse_with_a_clear_message(
    helm: Helm, tmp_path: Path, case: tuple[str, Obj, str]
) -> None:
    _, values, expected = case
    with pytest.raises(RenderError, match="execution error") as info:
        helm.template(values, tmp_path=tmp_path)
    assert expected in str(info.value)


def test_schema_is_strict_everywhere() -> None:
    """Every object of the schema refuses unknown keys (a typo must not pass silently),
    except the free-form maps that say so."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    free = {"global", "affinity", "tolerations", "extraEnv"}

    def walk(node: Obj, path: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, path
            for name, sub in node["properties"].items():
                assert sub.get("description"), f"{path}.{name} has no description"
                if name not in free:
                    walk(sub, f"{path}.{name}")

    walk(schema, "")


def test_defaults_pass_the_schema(helm: Helm, tmp_path: Path) -> None:
    assert helm.template(None, tmp_path=tmp_path)
