"""``PrometheusReporter``: values read back from its registry, push timing with a fake clock
and a fake pusher, a real ``/metrics`` server on a free port, and failed pushes that do not
raise."""

from __future__ import annotations

import logging
import socket
import urllib.request
from typing import Any

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kubevision_api.status import BestMetric, EpochMetrics
from kubevision_trainer.report.prometheus import JOB, PrometheusReporter
from kubevision_trainer.report.reporter import BatchEvent, Reporter, ResumePoint

LABELS = {"namespace": "team-a", "view": "digits", "modelversion": "digits-v1"}
METRICS = [
    "kubevision_train_learning_rate",
    "kubevision_train_batch_loss",
    "kubevision_train_batches_total",
    "kubevision_train_images_total",
    "kubevision_train_images_per_second",
    "kubevision_train_epoch",
    "kubevision_val_loss",
    "kubevision_val_accuracy",
    "kubevision_val_map",
    "kubevision_best_metric",
]


class FakeClock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakePusher:
    """Records each push (with the registry's batch count at that moment); can fail."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.error: Exception | None = None

    def __call__(self, gateway: str, **kwargs: Any) -> None:
        registry = kwargs["registry"]
        batches = registry.get_sample_value("kubevision_train_batches_total", LABELS)
        self.calls.append({"gateway": gateway, "batches": batches, **kwargs})
        if self.error is not None:
            raise self.error


def make(**kwargs: Any) -> PrometheusReporter:
    return PrometheusReporter(namespace="team-a", view="digits", modelversion="digits-v1", **kwargs)


def value(reporter: PrometheusReporter, name: str) -> float | None:
    return reporter.registry.get_sample_value(name, LABELS)


def test_is_a_reporter() -> None:
    reporter: Reporter = make()
    reporter.close(ok=True)


def test_nothing_reported_before_events() -> None:
    reporter = make()
    assert value(reporter, "kubevision_train_batches_total") == 0.0
    assert value(reporter, "kubevision_train_images_total") == 0.0
    for name in METRICS:
        if not name.endswith("_total"):
            assert value(reporter, name) is None, name


def test_batches_and_epoch_set_every_metric() -> None:
    reporter = make()
    reporter.start_epoch(2, 5, 3)
    reporter.batch(BatchEvent(2, 0, 3, learning_rate=0.1, loss=2.0, images=32, seconds=0.5))
    reporter.batch(BatchEvent(2, 1, 3, learning_rate=0.05, loss=1.5, images=32, seconds=0.25))
    reporter.batch(BatchEvent(2, 2, 3, learning_rate=0.025, loss=1.25, images=8, seconds=0.5))

    assert value(reporter, "kubevision_train_epoch") == 2.0
    assert value(reporter, "kubevision_train_learning_rate") == 0.025
    assert value(reporter, "kubevision_train_batch_loss") == 1.25
    assert value(reporter, "kubevision_train_batches_total") == 3.0
    assert value(reporter, "kubevision_train_images_total") == 72.0
    assert value(reporter, "kubevision_train_images_per_second") == 16.0

    reporter.epoch(
        EpochMetrics(epoch=2, val_loss=0.75, accuracy=0.875, map=0.5),
        BestMetric(epoch=2, value=0.875),
        "accuracy",
    )
    assert value(reporter, "kubevision_val_loss") == 0.75
    assert value(reporter, "kubevision_val_accuracy") == 0.875
    assert value(reporter, "kubevision_val_map") == 0.5
    assert value(reporter, "kubevision_best_metric") == 0.875


def test_none_metrics_are_not_set() -> None:
    reporter = make()
    reporter.epoch(EpochMetrics(epoch=1, val_loss=0.5, accuracy=None, map=None), None, "mAP")
    assert value(reporter, "kubevision_val_loss") == 0.5
    assert value(reporter, "kubevision_val_accuracy") is None
    assert value(reporter, "kubevision_val_map") is None
    assert value(reporter, "kubevision_best_metric") is None
    # A later epoch with a value sets it; a None afterwards keeps the last value.
    reporter.epoch(EpochMetrics(epoch=2, map=0.25), BestMetric(epoch=2, value=0.25), "mAP")
    reporter.epoch(EpochMetrics(epoch=3), BestMetric(epoch=2, value=0.25), "mAP")
    assert value(reporter, "kubevision_val_map") == 0.25
    assert value(reporter, "kubevision_train_epoch") == 3.0


def test_zero_seconds_batch_leaves_throughput_alone() -> None:
    reporter = make()
    reporter.batch(BatchEvent(1, 0, 2, learning_rate=0.1, loss=1.0, images=10, seconds=2.0))
    reporter.batch(BatchEvent(1, 1, 2, learning_rate=0.1, loss=1.0, images=10, seconds=0.0))
    assert value(reporter, "kubevision_train_images_per_second") == 5.0


def test_resume_continues_counters() -> None:
    reporter = make(start_batches=120, start_images=3840)
    assert value(reporter, "kubevision_train_batches_total") == 120.0
    assert value(reporter, "kubevision_train_images_total") == 3840.0
    reporter.batch(BatchEvent(5, 0, 30, learning_rate=0.1, loss=1.0, images=32, seconds=1.0))
    assert value(reporter, "kubevision_train_batches_total") == 121.0
    assert value(reporter, "kubevision_train_images_total") == 3872.0
    with pytest.raises(ValueError, match="negative"):
        make(start_batches=-1)


def test_resumed_event_continues_counters() -> None:
    # 4 epochs of 30 batches of 32 images done, then 3 batches of epoch 5 (a SIGTERM there).
    reporter = make()
    reporter.resumed(
        ResumePoint(
            epoch=4,
            batch=3,
            batches=30,
            epochs=10,
            batches_total=4 * 30 + 3,
            images_total=(4 * 30 + 3) * 32,
            history=tuple(EpochMetrics(epoch=e, accuracy=0.5) for e in range(1, 5)),
            best=BestMetric(epoch=4, value=0.5),
            selection="accuracy",
        )
    )
    for index in range(3, 30):
        reporter.batch(BatchEvent(5, index, 30, learning_rate=0.1, loss=1.0, images=32, seconds=1))
    assert value(reporter, "kubevision_train_batches_total") == 5 * 30
    assert value(reporter, "kubevision_train_images_total") == 5 * 30 * 32


def test_own_registry_not_the_global_one() -> None:
    first = make()
    second = make()  # would raise "Duplicated timeseries" on a shared registry
    first.batch(BatchEvent(1, 0, 1, learning_rate=0.1, loss=1.0, images=4, seconds=1.0))
    assert value(first, "kubevision_train_images_total") == 4.0
    assert value(second, "kubevision_train_images_total") == 0.0
    assert (
        prometheus_client.REGISTRY.get_sample_value("kubevision_train_images_total", LABELS) is None
    )


def test_push_timing_on_batches_epochs_and_close() -> None:
    clock, pusher = FakeClock(), FakePusher()
    reporter = make(pushgateway_url="http://gw:9091", clock=clock, pusher=pusher)

    def batch() -> None:
        reporter.batch(BatchEvent(1, 0, 10, learning_rate=0.1, loss=1.0, images=2, seconds=0.1))

    batch()  # the first batch pushes at once
    assert [c["batches"] for c in pusher.calls] == [1.0]
    clock.now += 4.9
    batch()  # 4.9 s after the last push: no push
    assert len(pusher.calls) == 1
    clock.now += 0.1
    batch()  # 5.0 s: push
    assert [c["batches"] for c in pusher.calls] == [1.0, 3.0]
    clock.now += 1.0
    reporter.epoch(EpochMetrics(epoch=1, val_loss=0.5), None, "accuracy")  # always pushes
    assert [c["batches"] for c in pusher.calls] == [1.0, 3.0, 3.0]
    clock.now += 4.0
    batch()  # 4 s after the epoch's push: no push
    assert len(pusher.calls) == 3
    reporter.close(ok=True)  # always pushes
    reporter.close(ok=True)  # idempotent
    assert [c["batches"] for c in pusher.calls] == [1.0, 3.0, 3.0, 4.0]
    call = pusher.calls[-1]
    assert call["gateway"] == "http://gw:9091"
    assert call["job"] == JOB == "kubevision-trainer"
    assert call["grouping_key"] == {
        "namespace": "team-a",
        "modelversion": "digits-v1",
        "run": "local",
    }
    assert call["registry"] is reporter.registry
    assert reporter.pushes == 4


def test_no_pushgateway_no_push() -> None:
    pusher = FakePusher()
    reporter = make(pusher=pusher)
    reporter.batch(BatchEvent(1, 0, 1, learning_rate=0.1, loss=1.0, images=2, seconds=0.1))
    reporter.epoch(EpochMetrics(epoch=1), None, "accuracy")
    reporter.close(ok=True)
    assert pusher.calls == []


def test_failed_pushes_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    clock, pusher = FakeClock(), FakePusher()
    pusher.error = OSError("error talking to pushgateway: 500 boom")
    reporter = make(pushgateway_url="http://gw:9091", clock=clock, pusher=pusher)
    with caplog.at_level(logging.DEBUG, logger="kubevision_trainer.report.prometheus"):
        reporter.batch(BatchEvent(1, 0, 2, learning_rate=0.1, loss=1.0, images=2, seconds=0.1))
        reporter.epoch(EpochMetrics(epoch=1), None, "accuracy")
        pusher.error = None
        reporter.close(ok=False)
    assert reporter.push_failures == 2
    assert reporter.pushes == 1
    levels = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert levels == [
        (
            "WARNING",
            "push to Pushgateway http://gw:9091 failed: error talking to pushgateway: 500 boom",
        ),
        (
            "DEBUG",
            "push to Pushgateway http://gw:9091 failed: error talking to pushgateway: 500 boom",
        ),
        ("INFO", "push to Pushgateway http://gw:9091 works again"),
    ]
    # The metrics were still recorded.
    assert value(reporter, "kubevision_train_batches_total") == 1.0


def test_real_push_to_closed_port_does_not_raise() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The port is closed now: connection refused, through the real push_to_gateway.
    reporter = make(pushgateway_url=f"http://127.0.0.1:{port}", push_timeout=2.0)
    reporter.batch(BatchEvent(1, 0, 1, learning_rate=0.1, loss=1.0, images=2, seconds=0.1))
    reporter.close(ok=True)
    assert reporter.push_failures == 2
    assert reporter.pushes == 0


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("kubevision_") and not sample.name.endswith("_created"):
                assert sample.labels == LABELS, sample
                out[sample.name] = sample.value
    return out


def test_metrics_server_on_a_free_port() -> None:
    reporter = make(port=0, address="127.0.0.1")
    try:
        assert reporter.port is not None and reporter.port > 0
        reporter.start_epoch(1, 3, 2)
        reporter.batch(BatchEvent(1, 0, 2, learning_rate=0.01, loss=0.5, images=16, seconds=0.5))
        reporter.epoch(
            EpochMetrics(epoch=1, val_loss=0.25, accuracy=0.75),
            BestMetric(epoch=1, value=0.75),
            "accuracy",
        )
        assert scrape(reporter.port) == {
            "kubevision_train_learning_rate": 0.01,
            "kubevision_train_batch_loss": 0.5,
            "kubevision_train_batches_total": 1.0,
            "kubevision_train_images_total": 16.0,
            "kubevision_train_images_per_second": 32.0,
            "kubevision_train_epoch": 1.0,
            "kubevision_val_loss": 0.25,
            "kubevision_val_accuracy": 0.75,
            "kubevision_best_metric": 0.75,
        }
    finally:
        port = reporter.port
        reporter.close(ok=True)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # the server is gone after close


def test_metrics_server_port_in_use_raises() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(OSError):
            make(port=sock.getsockname()[1], address="127.0.0.1")
