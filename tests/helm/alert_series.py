"""What the alerts' promtool cases are made of: input series, each alert as it must fire
(labels and annotations spelled out), and the values the rules are rendered with.

Series carry the labels the chart's monitors give them: the operator's through its
ServiceMonitor (job = the Service's name, target labels, the phase gauge's own `namespace`
kept by honorLabels), the trainer's scraped through the PodMonitor or pushed to the
Pushgateway (job ``kubevision-trainer``, grouping key namespace + modelversion + run)."""

from __future__ import annotations

from tests.helm.alerts import RUNBOOK
from tests.helm.helm_tool import Obj

RELEASE_JOB = "kv-kubevision"
MV = 'namespace="team-a", view="digits", modelversion="digits-v1"'
MV_LABELS = {"namespace": "team-a", "view": "digits", "modelversion": "digits-v1"}
SCRAPED = f'job="kubevision/kv-kubevision-trainers", pod="digits-v1-x7k2p", {MV}'
PUSHED = f'job="kubevision-trainer", run="uid-1", {MV}'

#: Values of the rendered chart the default cases run against (the defaults, monitored).
MONITORED: Obj = {
    "metrics": {
        "pushgatewayURL": "http://pushgateway.monitoring.svc:9091",
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
    }
}
#: Values that move every threshold the alerts read, for the tuned cases.
TUNED: Obj = {
    "operator": {
        "reconcileStallSeconds": 75,
        "watch": {"serverTimeoutSeconds": 60, "clientTimeoutSeconds": 90},
    },
    "metrics": {
        "pushgatewayURL": "http://pushgateway.monitoring.svc:9091",
        "pushgatewayRetentionSeconds": 3600,
        "prometheusRule": {
            "enabled": True,
            "operatorJob": "kubevision-operator",
            "additionalLabels": {"team": "vision"},
            "alerts": {
                "reconcileStalled": {"window": "5m"},
                "trainingStalled": {"window": "5m", "for": "0m"},
                "pushgatewayGroupStale": {"marginSeconds": 600, "for": "1m"},
            },
        },
    },
}


def op(metric: str, job: str = RELEASE_JOB, **labels: str) -> str:
    """An operator series as its ServiceMonitor scrapes it."""
    own = "".join(f', {k}="{v}"' for k, v in labels.items())
    return f'{metric}{{job="{job}", namespace="kubevision", pod="kv-kubevision-5f7c9-qz8vd"{own}}}'


def phase(name: str, job: str = RELEASE_JOB, pod: str = "kv-kubevision-5f7c9-qz8vd") -> str:
    """The operator's phase gauge of team-a/digits-v1 (its own namespace label honored)."""
    return f'kubevision_modelversion_phase{{job="{job}", pod="{pod}", {MV}, phase="{name}"}}'


def phases(current: str, job: str = RELEASE_JOB) -> dict[str, str]:
    """Every phase series of team-a/digits-v1: 1 for ``current``, 0 for the others."""
    names = ("Pending", "Queued", "Running", "Suspended", "Succeeded", "Failed")
    return {phase(n, job): "1x60" if n == current else "0x60" for n in names}


def fired(alert: str, labels: dict[str, str], description: str, summary: str) -> Obj:
    """An expected alert, severity defaulting to warning, and its runbook anchor."""
    return {
        "labels": {"severity": "warning", **labels},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{RUNBOOK}#{alert.lower()}",
        },
    }


def down(job: str = RELEASE_JOB) -> Obj:
    return fired(
        "KubevisionOperatorDown",
        {"job": job, "severity": "critical"},
        f"No target of job {job} has been up for 5m: no ModelVersion is reconciled and no "
        "trainer report is taken, and the other kubevision alerts are blind.",
        "The kubevision operator is down.",
    )


def stalled_reconcile(
    ran: str, window: str = "10m", limit: int = 120, job: str = RELEASE_JOB, **extra: str
) -> Obj:
    return fired(
        "KubevisionOperatorReconcileStalled",
        {"job": job, "namespace": "kubevision", **extra},
        f"A ModelVersion reconcile of {job} ran {ran} within the last {window} (limit "
        f"{limit} s): /healthz failed (its answer names the ModelVersion) and the liveness "
        "probe restarts the operator.",
        "A kubevision reconcile ran past its stall limit.",
    )


def silent_watch(kind: str, seconds: int = 330, job: str = RELEASE_JOB, **extra: str) -> Obj:
    return fired(
        "KubevisionOperatorWatchSilent",
        {"job": job, "namespace": "kubevision", "kind": kind, **extra},
        f"{job} wrote {kind} objects but has seen no {kind} watch event for over {seconds} s: "
        "the watch is deaf (or the writes fail), and the operator acts on a stale cache.",
        f"The kubevision operator's {kind} watch is silent.",
    )


def failed() -> Obj:
    return fired(
        "KubevisionModelVersionFailed",
        MV_LABELS,
        "ModelVersion team-a/digits-v1 (View digits) is Failed; its status.message and Events "
        "say why. A finished training stays finished: the alert lasts until it is deleted.",
        "A kubevision training failed.",
    )


def stalled_training(window: str = "15m", **extra: str) -> Obj:
    return fired(
        "KubevisionTrainingStalled",
        {**MV_LABELS, **extra},
        f"ModelVersion team-a/digits-v1 is Running but its trainer counted no training image "
        f"for {window}: a hung data loader, a stuck collective, or a validation pass longer "
        "than that.",
        "A kubevision training processes no images.",
    )


def stale_group(age: str, retention: int = 86400, **extra: str) -> Obj:
    return fired(
        "KubevisionPushgatewayGroupStale",
        {"namespace": "team-a", "modelversion": "digits-v1", "run": "uid-1", **extra},
        f"The Pushgateway group of team-a/digits-v1 (run uid-1) was last pushed {age} ago, "
        f"past the retention of {retention} s: the operator's sweep does not delete it (see "
        "its log).",
        "A kubevision Pushgateway group outlived its retention.",
    )


def teamed(alert: Obj) -> Obj:
    """``alert`` with TUNED's additional label."""
    return {**alert, "labels": {**alert["labels"], "team": "vision"}}


UP = "up"
AGE = "kubevision_operator_oldest_reconcile_age_seconds"
REQUESTS = "kubevision_operator_api_requests_total"
LAST_EVENT = "kubevision_operator_last_watch_event_timestamp_seconds"
IMAGES = "kubevision_train_images_total"
EPOCH = "kubevision_train_epoch"
PUSH_TIME = "push_time_seconds"
#: Trainer images: 100 a minute for 10 minutes, then none.
STOPS_AT_10M = "0+100x10 1000x50"


def push_time(job: str = "kubevision-trainer") -> str:
    """The Pushgateway's push_time_seconds of the trainer's group (scraped with honor_labels)."""
    return f'{PUSH_TIME}{{job="{job}", namespace="team-a", modelversion="digits-v1", run="uid-1"}}'
