"""``PrometheusReporter.evaluation``: the final evaluation's gauges read back from the
reporter's registry for literal evaluations of each task, the cap on per-concept series (the
worst concepts kept, the rest counted), and the series count with 1,000 concepts that
docs/metrics.md states."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubevision_api.evaluation import EvaluatedSplit
from kubevision_trainer.report import concept_series, factory
from kubevision_trainer.report.prometheus import PrometheusReporter
from kubevision_trainer.settings import TrainerSettings
from tests.trainer import evaluation_literals as literal
from tests.trainer.test_prometheus_reporter import FakePusher
from tests.trainer.trainer_helpers import classification_plan

LABELS = {"namespace": "team-a", "view": "digits", "modelversion": "digits-v1"}
VALUE = "kubevision_evaluation_value"
CONCEPT = "kubevision_evaluation_concept_value"
OMITTED = "kubevision_evaluation_concepts_omitted"
TEST = EvaluatedSplit.TEST


def make(**kwargs: Any) -> PrometheusReporter:
    return PrometheusReporter(namespace="team-a", view="digits", modelversion="digits-v1", **kwargs)


def samples(reporter: PrometheusReporter, name: str) -> dict[tuple[str, ...], float]:
    """The samples of ``name``: (split, then the metric's other labels in order) -> value."""
    found = {}
    for family in reporter.registry.collect():
        for sample in family.samples:
            if sample.name != name:
                continue
            assert {k: sample.labels[k] for k in LABELS} == LABELS
            extra = tuple(v for k, v in sample.labels.items() if k not in LABELS)
            found[extra] = sample.value
    return found


def test_classification_two_splits() -> None:
    """Every non-null figure of every concept, per split (a concept never predicted has no
    precision series, and an F1 of 0); a concept without ground truth keeps the one figure it
    has (a precision of 0: it was predicted) and is not counted as omitted."""
    validation = literal.classification(
        [("cat", 0.75, 0.5, 0.6, 6), ("dog", 0.5, 1.0, 2 / 3, 3), ("fox", 0.0, None, None, 0)],
        accuracy=2 / 3,
    )
    test = literal.classification(
        [("cat", 1.0, 0.25, 0.4, 4), ("dog", None, 0.0, 0.0, 2), ("fox", None, None, None, 0)],
        accuracy=1 / 6,
        split=TEST,
    )
    pusher = FakePusher()
    reporter = make(pushgateway_url="http://gateway:9091", pusher=pusher)
    reporter.evaluation(literal.status([validation, test]), [validation, test])
    assert samples(reporter, VALUE) == {
        ("validation", "accuracy"): 2 / 3,
        ("test", "accuracy"): 1 / 6,
    }
    assert samples(reporter, CONCEPT) == {
        ("validation", "cat", "precision"): 0.75,
        ("validation", "cat", "recall"): 0.5,
        ("validation", "cat", "f1"): 0.6,
        ("validation", "dog", "precision"): 0.5,
        ("validation", "dog", "recall"): 1.0,
        ("validation", "dog", "f1"): 2 / 3,
        ("validation", "fox", "precision"): 0.0,
        ("test", "cat", "precision"): 1.0,
        ("test", "cat", "recall"): 0.25,
        ("test", "cat", "f1"): 0.4,
        ("test", "dog", "recall"): 0.0,
        ("test", "dog", "f1"): 0.0,
    }
    assert samples(reporter, OMITTED) == {("validation",): 0.0, ("test",): 0.0}
    # The figures are final: pushed at once, not only at close.
    assert len(pusher.calls) == 1
    reporter.close(ok=True)


def test_tagging_without_positive_exports_nothing_for_the_concept() -> None:
    evaluation = literal.tagging([("red", 0.9, 0.8), ("blue", None, None)], map_=0.9)
    reporter = make()
    reporter.evaluation(literal.status([evaluation]), [evaluation])
    assert samples(reporter, VALUE) == {("validation", "mAP"): 0.9}
    assert samples(reporter, CONCEPT) == {
        ("validation", "red", "ap"): 0.9,
        ("validation", "red", "f1"): 0.8,
    }
    assert samples(reporter, OMITTED) == {("validation",): 0.0}


def test_detection_cap_keeps_the_worst_by_optimal_lrp() -> None:
    """oLRP is an error: the highest are the worst; equal values go by class index; a concept
    without any figure is neither kept nor counted."""
    rows: list[literal.DetectionRow] = [
        ("one", 0.2, 0.6, 0.9),
        ("two", 0.9, 0.1, 0.2),
        ("three", 0.5, 0.3, 0.5),
        ("four", None, None, None),
        ("five", 0.9, 0.05, 0.1),
    ]
    evaluation = literal.detection(rows, mean_optimal_lrp=0.625, map_=0.2625)
    reporter = make(max_concepts=2)
    reporter.evaluation(literal.status([evaluation]), [evaluation])
    # The first indicator and COCO mAP beside it.
    assert samples(reporter, VALUE) == {
        ("validation", "meanOptimalLRP"): 0.625,
        ("validation", "mAP"): 0.2625,
    }
    assert samples(reporter, CONCEPT) == {
        ("validation", "two", "optimal_lrp"): 0.9,
        ("validation", "two", "ap"): 0.1,
        ("validation", "two", "ap50"): 0.2,
        ("validation", "five", "optimal_lrp"): 0.9,
        ("validation", "five", "ap"): 0.05,
        ("validation", "five", "ap50"): 0.1,
    }
    assert samples(reporter, OMITTED) == {("validation",): 2.0}


def test_classification_cap_ranks_by_recall_and_puts_unranked_last() -> None:
    evaluation = literal.classification(
        [("a", 0.1, 0.9, 0.2, 5), ("b", 0.9, 0.3, 0.45, 5), ("c", 0.0, None, None, 0)],
        accuracy=0.6,
    )
    assert [f.concept for f in concept_series.worst(evaluation, 3).kept] == ["b", "a", "c"]
    capped = concept_series.worst(evaluation, 1)
    assert [f.concept for f in capped.kept] == ["b"] and capped.omitted == 2
    nothing = concept_series.worst(evaluation, 0)
    assert nothing.kept == [] and nothing.omitted == 3


def test_tagging_cap_ranks_by_ap() -> None:
    evaluation = literal.tagging([("a", 0.7, 0.1), ("b", 0.2, 0.9), ("c", 0.5, 0.5)], map_=0.4)
    capped = concept_series.worst(evaluation, 2)
    assert [f.concept for f in capped.kept] == ["b", "c"] and capped.omitted == 1


def test_a_new_evaluation_replaces_the_old_series() -> None:
    first = literal.tagging([("red", 0.9, 0.8), ("blue", 0.4, 0.5)], map_=0.65)
    second = literal.tagging([("red", 0.7, 0.6)], map_=0.7, split=EvaluatedSplit.DATASET)
    reporter = make()
    reporter.evaluation(literal.status([first]), [first])
    reporter.evaluation(literal.status([second]), [second])
    assert samples(reporter, VALUE) == {("dataset", "mAP"): 0.7}
    assert samples(reporter, CONCEPT) == {
        ("dataset", "red", "ap"): 0.7,
        ("dataset", "red", "f1"): 0.6,
    }
    assert samples(reporter, OMITTED) == {("dataset",): 0.0}


def test_refuses_two_evaluations_of_one_split() -> None:
    evaluation = literal.tagging([("red", 0.9, 0.8)], map_=0.9)
    reporter = make()
    with pytest.raises(ValueError, match="one evaluation per split"):
        reporter.evaluation(literal.status([evaluation]), [evaluation, evaluation])
    assert samples(reporter, VALUE) == {}


def test_refuses_an_evaluation_without_its_figures() -> None:
    evaluation = literal.tagging([("red", 0.9, 0.8)], map_=0.9).model_copy(update={"tagging": None})
    with pytest.raises(ValueError, match="tagging evaluation without its figures"):
        make().evaluation(literal.status([evaluation]), [evaluation])
    with pytest.raises(ValueError, match="must not be negative"):
        make(max_concepts=-1)


def test_thousand_concepts_two_splits() -> None:
    """The figure docs/metrics.md gives: 1,000 detection concepts on validation and test with
    the default cap give 2 x 100 x 3 per-concept series, 2 x 2 headline values and 2 omitted
    counts of 900: 606 series; the kept ones are the 100 highest oLRP."""
    evaluations = []
    for split in (EvaluatedSplit.VALIDATION, TEST):
        # Concept i has oLRP i / 1000 (and AP 1 - oLRP): the worst are 900..999.
        rows = [(f"c{i:04d}", i / 1000, 1 - i / 1000, 1.0) for i in range(1000)]
        evaluations.append(literal.detection(rows, 0.4995, 0.5005, split=split))
    reporter = make()
    reporter.evaluation(literal.status(evaluations), evaluations)
    concepts = samples(reporter, CONCEPT)
    assert len(concepts) == 600
    total = sum(len(samples(reporter, n)) for n in (VALUE, CONCEPT, OMITTED))
    assert total == 606
    kept = {concept for split, concept, _ in concepts if split == "test"}
    assert kept == {f"c{i:04d}" for i in range(900, 1000)}
    assert concepts[("test", "c0900", "optimal_lrp")] == 0.9
    assert samples(reporter, OMITTED) == {("validation",): 900.0, ("test",): 900.0}


def test_the_cap_is_a_trainer_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = classification_plan(tmp_path, f"file://{tmp_path}/out/", (0, 1), metrics_port=0)
    monkeypatch.setenv("KUBEVISION_PROMETHEUS_MAX_CONCEPTS", "7")
    for settings, expected in ((None, 7), (TrainerSettings(prometheus_max_concepts=3), 3)):
        (reporter,) = factory.job_reporters(plan, settings)
        assert isinstance(reporter, PrometheusReporter)
        assert reporter.max_concepts == expected
        reporter.close(ok=True)
    monkeypatch.delenv("KUBEVISION_PROMETHEUS_MAX_CONCEPTS")
    assert TrainerSettings().prometheus_max_concepts == 100
