"""End to end, one test per task type: a View and a ModelVersion applied to the real control
plane; the operator creates the Job; the node agent runs the real trainer on a small dataset
in the real S3 server; the status follows every step, and shows each epoch's metrics within
5 s of the epoch's record in metrics.jsonl; the checkpoint lands in S3 with the recorded
sha256; the evaluation's summary in the status equals the evaluation.json in S3, beside its
figures, and reaches the View's models library; the serving bundle lands in S3 with the
sizes and checksums of status.export, its graph running in onnxruntime (e2e_export.py); the
trainer's metrics reach Prometheus through the Pushgateway."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image, ImageDraw

from testenv.operator_helpers import wait_for
from tests.integration import e2e_evaluation as ev
from tests.integration import e2e_export as ex
from tests.integration import e2e_helpers as h
from tests.integration.e2e_helpers import e2e  # noqa: F401  (fixture)


@pytest.mark.slow
@pytest.mark.parametrize("task", list(h.CASES))
def test_trains_through_the_operator(e2e: h.E2E, node_agent: Any, task: str) -> None:  # noqa: F811
    case = h.CASES[task]
    dataset = case.dataset(e2e)
    name = f"{task}-e2e"
    mv = h.modelversion(
        e2e,
        name,
        task,
        architecture=case.architecture,
        size=case.size,
        epochs=case.epochs,
        batch=case.batch,
    )
    node_agent(cpu="4", memory="16Gi")
    prefix = f"runs/{name}"
    watcher = h.Watcher(e2e, name, records_prefix=prefix)
    with e2e.operator() as operator:
        e2e.apply(e2e.secret(), h.view(task, dataset), mv)
        obj = watcher.finished(timeout=900)
        # The operator's phase gauge agrees with the status it wrote.
        series = (  # Prometheus writes labels in name order
            f'kubevision_modelversion_phase{{modelversion="{name}",namespace="{e2e.namespace}",'
            f'phase="Succeeded",view="{task}"}} 1.0'
        )
        phases: list[str] = []

        def gauge() -> bool:
            text = operator.metrics_text()
            phases[:] = [
                line
                for line in text.splitlines()
                if line.startswith("kubevision_modelversion_phase{")
            ]
            return series in text

        try:
            wait_for("the operator's phase gauge", gauge, timeout=15)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; phase series: {phases}") from None
        # The evaluation is in the status by the time it says Succeeded (the trainer's last
        # report precedes its exit); the View and the Event need the operator.
        evaluation = ev.assert_evaluation(e2e, obj, prefix, task)
        ev.assert_evaluated_event(e2e, name, evaluation)
        ev.assert_models_library(e2e, task, name, evaluation)
        # The serving bundle: status.export against the files in S3, and its Event.
        export = ex.assert_export(e2e, obj, prefix, task, case.size)
        ex.assert_exported_event(e2e, name, export)

    h.assert_steps_in_order(watcher)
    trained = h.assert_trained(e2e, obj, prefix, case.epochs)
    lags = h.assert_epochs_on_time(watcher, trained.records)
    print(f"{task}: status lag behind metrics.jsonl per epoch (s): {lags}")
    print(f"{task}: {evaluation.indicator.value} = {evaluation.value} (validation)")
    if task == "detection":
        assert obj["status"]["metrics"]["selection"] == "mAP"
    h.assert_prometheus(e2e, name, task, trained, case.epochs, case.batch)


def _png(size: tuple[int, int], line: bool) -> bytes:
    image = Image.new("RGB", size, "white")
    if line:  # a band of 1/40 of the rows across the figure: 2.5 % of the pixels
        top = size[1] // 2
        ImageDraw.Draw(image).rectangle((0, top, size[0], top + size[1] // 40 - 1), fill="navy")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_the_png_check_refuses_blank_and_tiny_figures() -> None:
    assert ev.check_png("s3://b/ok.png", _png((640, 480), line=True)) == (640, 480)
    with pytest.raises(AssertionError, match="blank"):
        ev.check_png("s3://b/blank.png", _png((640, 480), line=False))
    with pytest.raises(AssertionError, match=r"\(120, 90\)"):
        ev.check_png("s3://b/tiny.png", _png((120, 90), line=True))
