"""The alerts' promtool cases: for each alert, series where its condition holds (it fires,
with its labels and annotations) and near misses where it must stay silent; with the chart's
defaults (DEFAULT) and with every threshold moved (TUNED_CASES). promtool's clock starts at
Unix time 0, so a timestamp of ``-89000`` is 89,000 s before the first evaluation."""

from __future__ import annotations

from tests.helm.alert_series import (
    AGE,
    EPOCH,
    IMAGES,
    LAST_EVENT,
    PUSHED,
    REQUESTS,
    SCRAPED,
    STOPS_AT_10M,
    UP,
    down,
    failed,
    op,
    phase,
    phases,
    push_time,
    silent_watch,
    stale_group,
    stalled_reconcile,
    stalled_training,
    teamed,
)
from tests.helm.alerts import Case

DEFAULT: list[Case] = [
    # --- KubevisionOperatorDown (for 5m) ------------------------------------------------
    Case(
        "operator-down",
        "KubevisionOperatorDown",
        {op(UP): "1 1 0x20", op(UP, job="other-app"): "1x22"},
        {"6m": [], "8m": [down()]},
    ),
    Case(
        "operator-gone",
        "KubevisionOperatorDown",
        {op(UP): "1 1 stale", op(UP, job="other-app"): "1x22"},
        {"6m": [], "8m": [down()]},
    ),
    Case(
        "operator-restarted",
        "KubevisionOperatorDown",
        {op(UP): "1 1 0 0 0 1x20", op(UP, job="other-app"): "0x25"},
        {"4m": [], "8m": [], "20m": []},
    ),
    # --- KubevisionOperatorReconcileStalled (> 120 s within 10m) -----------------------
    # The liveness probe restarted the operator after the 180 s sample (4m).
    Case(
        "reconcile-stalled",
        "KubevisionOperatorReconcileStalled",
        {op(AGE): "0 0 60 120 180 0x20"},
        {
            "3m": [],
            "5m": [stalled_reconcile("3m 0s")],
            "13m": [stalled_reconcile("3m 0s")],
            "15m": [],
        },
    ),
    Case(
        "reconcile-at-the-limit",
        "KubevisionOperatorReconcileStalled",
        {op(AGE): "0 60 120 0 100 0x20"},
        {"3m": [], "5m": [], "12m": []},
    ),
    # --- KubevisionOperatorWatchSilent (writes, no event for 330 s; for 2m) -----------------
    # ModelVersion status patches every minute, its last event 20 s before 0: over 330 s
    # (the client's watch timeout, not the server's 300) from 6m on, firing from 8m.
    Case(
        "watch-deaf",
        "KubevisionOperatorWatchSilent",
        {
            op(REQUESTS, verb="patch", resource="modelversions/status"): "0+1x30",
            op(LAST_EVENT, kind="ModelVersion"): "-20x30",
            op(REQUESTS, verb="patch", resource="views/status"): "0+1x30",
            op(LAST_EVENT, kind="View"): "0+60x30",
        },
        {"5m": [], "7m": [], "9m": [silent_watch("ModelVersion")]},
    ),
    # Jobs created, but the Job watch never showed one (no series of its own at all).
    Case(
        "watch-never-heard",
        "KubevisionOperatorWatchSilent",
        {
            op(REQUESTS, verb="create", resource="jobs"): "0+1x30",
            op(LAST_EVENT, kind="ModelVersion"): "0+60x30",
        },
        {"2m": [], "4m": [silent_watch("Job")]},
    ),
    # A quiet cluster: no write, no event for half an hour.
    Case(
        "watch-quiet-cluster",
        "KubevisionOperatorWatchSilent",
        {
            op(REQUESTS, verb="patch", resource="modelversions/status"): "12x30",
            op(REQUESTS, verb="get", resource="pods"): "0+3x30",
            op(LAST_EVENT, kind="ModelVersion"): "0x30",
            op(LAST_EVENT, kind="Pod"): "0x30",
        },
        {"10m": [], "25m": []},
    ),
    Case(
        "watch-echoes",
        "KubevisionOperatorWatchSilent",
        {
            op(REQUESTS, verb="patch", resource="modelversions/status"): "0+1x30",
            op(LAST_EVENT, kind="ModelVersion"): "0+60x30",
        },
        {"10m": [], "25m": []},
    ),
    # Writes of kinds the operator does not watch have no echo to wait for.
    Case(
        "watch-unwatched-writes",
        "KubevisionOperatorWatchSilent",
        {
            op(REQUESTS, verb="create", resource="configmaps"): "0+1x30",
            op(REQUESTS, verb="create", resource="services"): "0+1x30",
            op(REQUESTS, verb="create", resource="events"): "0+1x30",
            op(LAST_EVENT, kind="ModelVersion"): "0x30",
        },
        {"10m": [], "25m": []},
    ),
    # --- KubevisionModelVersionFailed --------------------------------------------------
    # The old and the new operator Pod both report it for a while: one alert.
    Case(
        "modelversion-failed",
        "KubevisionModelVersionFailed",
        {
            phase("Running"): "1 1 0x10",
            phase("Failed"): "0 0 1x10",
            phase("Failed", pod="kv-kubevision-5f7c9-newpd"): "_ _ _ 1x10",
        },
        {"1m": [], "3m": [failed()], "6m": [failed()]},
    ),
    Case(
        "modelversion-succeeded",
        "KubevisionModelVersionFailed",
        phases("Succeeded"),
        {"5m": []},
    ),
    Case(
        "modelversion-failed-elsewhere",
        "KubevisionModelVersionFailed",
        phases("Failed", job="other-kubevision"),
        {"5m": []},
    ),
    # --- KubevisionTrainingStalled (no image for 15m; for 5m) ----------------------------
    # Scraped and pushed alike stop at 10m: the condition holds from 25m, fires from 30m.
    Case(
        "training-stalled",
        "KubevisionTrainingStalled",
        {
            **phases("Running"),
            f"{EPOCH}{{{SCRAPED}}}": "3x60",
            f"{IMAGES}{{{SCRAPED}}}": STOPS_AT_10M,
            f"{EPOCH}{{{PUSHED}}}": "3x60",
            f"{IMAGES}{{{PUSHED}}}": STOPS_AT_10M,
        },
        {"20m": [], "28m": [], "32m": [stalled_training()]},
    ),
    Case(
        "training-runs",
        "KubevisionTrainingStalled",
        {
            **phases("Running"),
            f"{EPOCH}{{{SCRAPED}}}": "3x60",
            f"{IMAGES}{{{SCRAPED}}}": "0+100x60",
        },
        {"32m": [], "50m": []},
    ),
    # The pushes fail, the scrapes go on: the training runs.
    Case(
        "training-push-failing",
        "KubevisionTrainingStalled",
        {
            **phases("Running"),
            f"{EPOCH}{{{PUSHED}}}": "3x60",
            f"{IMAGES}{{{PUSHED}}}": "500x60",
            f"{EPOCH}{{{SCRAPED}}}": "3x60",
            f"{IMAGES}{{{SCRAPED}}}": "500+50x60",
        },
        {"32m": []},
    ),
    # Waiting (Pending after a failed attempt) with the last attempt's pushed group left.
    Case(
        "training-pending",
        "KubevisionTrainingStalled",
        {**phases("Pending"), f"{EPOCH}{{{PUSHED}}}": "3x60", f"{IMAGES}{{{PUSHED}}}": "500x60"},
        {"32m": []},
    ),
    # A long dataset load: the counters are served from the start, at 0; no epoch yet.
    Case(
        "training-loading-dataset",
        "KubevisionTrainingStalled",
        {**phases("Running"), f"{IMAGES}{{{SCRAPED}}}": "0x60"},
        {"32m": [], "50m": []},
    ),
    Case(
        "training-not-monitored",
        "KubevisionTrainingStalled",
        phases("Running"),
        {"32m": []},
    ),
    # The next attempt loads its dataset; the failed one's group still says how it ended.
    Case(
        "training-next-attempt-loading",
        "KubevisionTrainingStalled",
        {
            **phases("Running"),
            f"{EPOCH}{{{PUSHED}}}": "3x60",
            f"{IMAGES}{{{PUSHED}}}": "5000x60",
            f'kubevision_train_outcome{{{PUSHED}, outcome="Failed"}}': "1x60",
        },
        {"32m": []},
    ),
    # Evaluated, now exporting: no training image is due.
    Case(
        "training-exporting",
        "KubevisionTrainingStalled",
        {
            **phases("Running"),
            f"{EPOCH}{{{SCRAPED}}}": "3x60",
            f"{IMAGES}{{{SCRAPED}}}": STOPS_AT_10M,
            f'kubevision_evaluation_value{{{SCRAPED}, split="validation", indicator="accuracy"}}': (
                "_x11 0.9x50"
            ),
        },
        {"32m": []},
    ),
    # --- KubevisionPushgatewayGroupStale (older than 86400 + 3600 s; for 5m) -------------------
    # Pushed 89,000 s before 0: past 90,000 s from 16m40s on, firing from 22m.
    Case(
        "group-stale",
        "KubevisionPushgatewayGroupStale",
        {**phases("Succeeded"), push_time(): "-89000x60"},
        {"16m": [], "21m": [], "23m": [stale_group("1d 1h 6m 20s")]},
    ),
    # Deleted: the operator forgot its phase series; the sweep should have taken the group.
    Case(
        "group-of-deleted",
        "KubevisionPushgatewayGroupStale",
        {push_time(): "-89000x60"},
        {"23m": [stale_group("1d 1h 6m 20s")]},
    ),
    Case(
        "group-suspended",
        "KubevisionPushgatewayGroupStale",
        {**phases("Suspended"), push_time(): "-89000x60"},
        {"23m": [], "50m": []},
    ),
    Case(
        "group-running",
        "KubevisionPushgatewayGroupStale",
        {**phases("Running"), push_time(): "-89000x60"},
        {"50m": []},
    ),
    Case(
        "group-fresh",
        "KubevisionPushgatewayGroupStale",
        {**phases("Failed"), push_time(): "-3600x60"},
        {"50m": []},
    ),
    Case(
        "group-of-another-job",
        "KubevisionPushgatewayGroupStale",
        {push_time(job="nightly-export"): "-89000x60"},
        {"50m": []},
    ),
]

#: With TUNED's values: each threshold moved, each alert with the team label, every operator
#: series selected by operatorJob. Each fires where DEFAULT's would not (yet).
TUNED_JOB = "kubevision-operator"
TUNED_CASES: list[Case] = [
    Case(
        "tuned-operator-down",
        "KubevisionOperatorDown",
        {op(UP, job=TUNED_JOB): "0x10", op(UP): "1x10"},
        {"4m": [], "6m": [teamed(down(TUNED_JOB))]},
    ),
    # The default job's target is down: not this operator's.
    Case(
        "tuned-operator-up",
        "KubevisionOperatorDown",
        {op(UP, job=TUNED_JOB): "1x10", op(UP): "0x10"},
        {"6m": []},
    ),
    Case(
        "tuned-reconcile-stalled",
        "KubevisionOperatorReconcileStalled",
        {op(AGE, job=TUNED_JOB): "0 50 100 0x20", op(AGE): "0 500 0x20"},
        {
            "3m": [stalled_reconcile("1m 40s", "5m", 75, TUNED_JOB, team="vision")],
            "8m": [],
        },
    ),
    Case(
        "tuned-watch-silent",
        "KubevisionOperatorWatchSilent",
        {
            op(REQUESTS, job=TUNED_JOB, verb="patch", resource="modelversions/status"): "0+1x30",
            op(LAST_EVENT, job=TUNED_JOB, kind="ModelVersion"): "-20x30",
        },
        {"3m": [], "4m": [silent_watch("ModelVersion", 90, TUNED_JOB, team="vision")]},
    ),
    Case(
        "tuned-modelversion-failed",
        "KubevisionModelVersionFailed",
        {**phases("Failed", job=TUNED_JOB), **phases("Succeeded")},
        {"1m": [teamed(failed())]},
    ),
    Case(
        "tuned-modelversion-failed-elsewhere",
        "KubevisionModelVersionFailed",
        {**phases("Succeeded", job=TUNED_JOB), **phases("Failed")},
        {"1m": []},
    ),
    Case(
        "tuned-training-stalled",
        "KubevisionTrainingStalled",
        {
            **phases("Running", job=TUNED_JOB),
            f"{EPOCH}{{{SCRAPED}}}": "3x60",
            f"{IMAGES}{{{SCRAPED}}}": STOPS_AT_10M,
        },
        {"14m": [], "16m": [stalled_training("5m", team="vision")]},
    ),
    # Pushed 4,000 s before 0: past 3,600 + 600 s from 3m20s on, firing from 5m.
    Case(
        "tuned-group-stale",
        "KubevisionPushgatewayGroupStale",
        {**phases("Succeeded", job=TUNED_JOB), push_time(): "-4000x60"},
        {"3m": [], "6m": [stale_group("1h 12m 40s", 3600, team="vision")]},
    ),
]
