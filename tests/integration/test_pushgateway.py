"""``PrometheusReporter`` pushes to a real Pushgateway, and a real Prometheus scraping it with
``honor_labels`` sees every metric with the trainer's labels and exact values."""

from __future__ import annotations

import uuid

from prometheus_client.parser import text_string_to_metric_families

from kubevision_api.status import BestMetric, EpochMetrics
from kubevision_trainer.report.prometheus import JOB, PrometheusReporter
from kubevision_trainer.report.reporter import BatchEvent
from tests.integration import services

# Three batches of epoch 1 of 2, then its validation.
BATCHES = [  # (learning_rate, loss, images, seconds)
    (0.1, 2.5, 32, 0.5),
    (0.05, 1.75, 32, 0.25),
    (0.025, 1.125, 8, 0.125),
]
EXPECTED = {
    "kubevision_train_learning_rate": 0.025,
    "kubevision_train_batch_loss": 1.125,
    "kubevision_train_batches_total": 10.0 + 3,  # resumed after 10 batches
    "kubevision_train_images_total": 320.0 + 72,
    "kubevision_train_images_per_second": 64.0,
    "kubevision_train_epoch": 1.0,
    "kubevision_val_loss": 0.875,
    "kubevision_val_accuracy": 0.8125,
    "kubevision_best_metric": 0.8125,
}  # kubevision_val_map is absent: the epoch's mAP is None.


#: The group's run label: the ModelVersion's uid.
RUN = "3f2a1c9e-5b7d-4e21-9a0c-7d1e2f3a4b5c"


def run_epoch(pushgateway_url: str, labels: dict[str, str]) -> PrometheusReporter:
    reporter = PrometheusReporter(
        namespace=labels["namespace"],
        view=labels["view"],
        modelversion=labels["modelversion"],
        run=RUN,
        pushgateway_url=pushgateway_url,
        start_batches=10,
        start_images=320,
    )
    reporter.start_epoch(1, 2, len(BATCHES))
    for index, (learning_rate, loss, images, seconds) in enumerate(BATCHES):
        reporter.batch(BatchEvent(1, index, len(BATCHES), learning_rate, loss, images, seconds))
    reporter.epoch(
        EpochMetrics(epoch=1, learning_rate=0.025, train_loss=1.8, val_loss=0.875, accuracy=0.8125),
        BestMetric(epoch=1, value=0.8125),
        "accuracy",
    )
    return reporter


def labels_for_test() -> dict[str, str]:
    return {"namespace": "team-a", "view": "digits", "modelversion": f"mv-{uuid.uuid4().hex[:8]}"}


def test_pushgateway_holds_every_metric(pushgateway: services.Pushgateway) -> None:
    labels = labels_for_test()
    reporter = run_epoch(pushgateway.url, labels)
    assert reporter.push_failures == 0
    assert reporter.pushes == 2  # the first batch, then the epoch end (batches 2-3: < 5 s)

    found: dict[str, float] = {}
    group: dict[str, float] = {}
    for family in text_string_to_metric_families(pushgateway.metrics_text()):
        for sample in family.samples:
            if sample.labels.get("modelversion") != labels["modelversion"]:
                continue
            if sample.name.startswith("push_"):  # the Pushgateway's own, per group
                assert sample.labels == {
                    "namespace": labels["namespace"],
                    "modelversion": labels["modelversion"],
                    "run": RUN,
                    "job": JOB,
                    "instance": "",
                }, sample
                group[sample.name] = sample.value
                continue
            if sample.name.endswith("_created"):
                continue
            # The grouping key and job come back as labels, beside the pushed ones.
            assert sample.labels == {**labels, "run": RUN, "job": JOB, "instance": ""}, sample
            found[sample.name] = sample.value
    assert found == EXPECTED
    assert group["push_failure_time_seconds"] == 0.0
    assert group["push_time_seconds"] > 0.0

    reporter.batch(BatchEvent(2, 0, 3, 0.0125, 0.5, 16, 0.5))
    reporter.close(ok=True)  # pushes the final state
    assert reporter.pushes == 3
    text = pushgateway.metrics_text()
    final = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("modelversion") == labels["modelversion"]
        and sample.name.startswith("kubevision_")
    }
    assert final["kubevision_train_batches_total"] == 14.0
    assert final["kubevision_train_batch_loss"] == 0.5
    # The last push says how the run ended, and when.
    assert final["kubevision_train_outcome"] == 1.0
    assert 'outcome="Succeeded"' in text
    assert final["kubevision_train_finished_timestamp_seconds"] > 1.7e9


def test_prometheus_scrapes_the_pushed_metrics(
    pushgateway: services.Pushgateway, prometheus: services.Prometheus
) -> None:
    labels = labels_for_test()
    reporter = run_epoch(pushgateway.url, labels)
    reporter.close(ok=True)

    selector = f'{{__name__=~"kubevision_.+",modelversion="{labels["modelversion"]}"}}'
    samples = prometheus.wait_for(
        selector,
        lambda found: {s.name for s in found} >= set(EXPECTED),
        timeout=30,
    )
    ended = {"kubevision_train_outcome", "kubevision_train_finished_timestamp_seconds"}
    got = {
        s.name: s.value for s in samples if not s.name.endswith("_created") and s.name not in ended
    }
    assert got == EXPECTED
    for sample in samples:
        # honor_labels keeps the pushed labels (no exported_* renames, job stays the
        # trainer's, the empty instance label drops out): exactly the trainer's labels.
        extra = {"outcome": "Succeeded"} if sample.name == "kubevision_train_outcome" else {}
        assert sample.labels == {
            "__name__": sample.name,
            **labels,
            "run": RUN,
            "job": JOB,
            **extra,
        }, sample

    # The dashboards' aggregation draws the same value.
    best = prometheus.query(
        f"max by (namespace, view, modelversion) "
        f'(kubevision_best_metric{{modelversion="{labels["modelversion"]}"}})'
    )
    assert [(s.labels, s.value) for s in best] == [(labels, 0.8125)]
