"""resolve(): the pure View + ModelVersion -> TrainingPlan function, and the plan hash that
decides whether a run may resume."""

from __future__ import annotations

from typing import Any

import pytest

from kubevision_api.contract import StorageRole
from kubevision_api.meta import LocalObjectReference
from kubevision_api.modelversion import ModelVersion
from kubevision_api.plan import PlanDefaults, PlanError, StorageSecrets, TrainingPlan, resolve
from kubevision_api.view import View, model_id

BASE = "s3://runs"


def make_view(
    task: str = "classification", concepts: tuple[str, ...] = ("dog", "cat", "bird")
) -> View:
    return View.model_validate(
        {
            "metadata": {"name": "pets", "namespace": "team-a"},
            "spec": {
                "task": task,
                "concepts": [{"name": c} for c in concepts],
                "dataset": {"uri": "s3://data/coco.json", "format": "coco"},
            },
        }
    )


def make_mv(uid: str | None = "0b5e-uid", **spec: Any) -> ModelVersion:
    metadata: dict[str, Any] = {"name": "pets-v1", "namespace": "team-a"}
    if uid is not None:
        metadata["uid"] = uid
    doc_spec: dict[str, Any] = {"viewRef": {"name": "pets"}, "architecture": "resnet18"}
    doc_spec.update(spec)
    return ModelVersion.model_validate({"metadata": metadata, "spec": doc_spec})


def plan_of(view: View | None = None, mv: ModelVersion | None = None) -> TrainingPlan:
    return resolve(view or make_view(), mv or make_mv(), PlanDefaults(output_base_uri=BASE))


def test_resolve_fields() -> None:
    plan = plan_of()
    assert (plan.namespace, plan.model_version, plan.view, plan.uid) == (
        "team-a",
        "pets-v1",
        "pets",
        "0b5e-uid",
    )
    # Class index order is sorted by name (docs/decisions.md), whatever order the View lists.
    assert plan.concepts == ["bird", "cat", "dog"]
    assert plan.model == model_id(plan.task, ["dog", "cat", "bird"])
    assert plan.dataset.uri == "s3://data/coco.json"
    assert plan.status_endpoint is None  # no status URL in the defaults: local mode
    assert plan.metrics_port == 9090


def test_default_output_uri_with_uid() -> None:
    assert plan_of().output_uri == "s3://runs/team-a/pets-v1/0b5e-uid/"


def test_default_output_uri_without_uid() -> None:
    assert plan_of(mv=make_mv(uid=None)).output_uri == "s3://runs/team-a/pets-v1/"


def test_base_uri_trailing_slash_is_not_doubled() -> None:
    plan = resolve(make_view(), make_mv(), PlanDefaults(output_base_uri="file:///tmp/runs/"))
    assert plan.output_uri == "file:///tmp/runs/team-a/pets-v1/0b5e-uid/"


def test_explicit_output_uri_gets_a_slash() -> None:
    plan = plan_of(mv=make_mv(output={"uri": "s3://elsewhere/run-7"}))
    assert plan.output_uri == "s3://elsewhere/run-7/"


def test_status_endpoint_from_defaults() -> None:
    defaults = PlanDefaults(status_url="https://op:8443/status", status_ca_pem="PEM")
    plan = resolve(make_view(), make_mv(), defaults)
    assert plan.status_endpoint is not None
    assert (plan.status_endpoint.url, plan.status_endpoint.ca_pem) == (
        "https://op:8443/status",
        "PEM",
    )
    assert plan.status_endpoint.audience == "kubevision.dev"


def test_architecture_not_fitting_the_task() -> None:
    mv = make_mv(architecture="fasterrcnn_mobilenet_v3_large_320_fpn")
    with pytest.raises(PlanError) as info:
        plan_of(mv=mv)
    err = info.value
    assert err.field == "spec.architecture"
    assert err.source == "ModelVersion team-a/pets-v1"
    assert str(err).startswith("ModelVersion team-a/pets-v1: spec.architecture: ")
    assert "does not fit the classification task" in str(err)
    assert "resnet18" in str(err)  # the message lists what would fit


def test_classifier_for_a_detection_view() -> None:
    with pytest.raises(PlanError, match="does not fit the detection task"):
        plan_of(view=make_view(task="detection"))


def test_view_ref_must_name_the_view() -> None:
    mv = make_mv(viewRef={"name": "other"})
    with pytest.raises(PlanError) as info:
        plan_of(mv=mv)
    assert info.value.field == "spec.viewRef.name"


def test_resolve_is_pure_and_round_trips() -> None:
    view, mv = make_view(), make_mv()
    first = plan_of(view, mv)
    assert plan_of(view, mv) == first
    # The plan travels as JSON in a ConfigMap: the trainer must read back the same plan.
    again = TrainingPlan.model_validate(first.wire())
    assert again == first
    assert again.training_hash() == first.training_hash()


def test_training_hash_is_sha256_hex() -> None:
    digest = plan_of().training_hash()
    assert len(digest) == 64 and int(digest, 16) >= 0


def test_training_hash_ignores_where_the_run_goes_and_workers() -> None:
    base = plan_of().training_hash()
    assert plan_of(mv=make_mv(training={"dataLoaderWorkers": 7})).training_hash() == base
    assert plan_of(mv=make_mv(output={"uri": "s3://other/"})).training_hash() == base
    assert plan_of(mv=make_mv(uid="another-uid")).training_hash() == base
    assert plan_of(mv=make_mv(runPolicy={"suspend": True})).training_hash() == base
    # Status is the operator's observation; it never enters what was trained.
    doc = make_mv().model_dump(by_alias=True)
    doc["status"] = {"phase": "Running", "model": "m000000000000", "jobName": "j"}
    assert plan_of(mv=ModelVersion.model_validate(doc)).training_hash() == base
    defaults = PlanDefaults(output_base_uri="s3://x", status_url="https://s", metrics_port=None)
    assert resolve(make_view(), make_mv(), defaults).training_hash() == base


def test_training_hash_changes_with_what_decides_the_weights() -> None:
    base = plan_of().training_hash()
    changed = [
        plan_of(mv=make_mv(training={"learningRate": 0.02})),
        plan_of(mv=make_mv(training={"seed": 1})),
        plan_of(mv=make_mv(architecture="resnet34")),
        plan_of(mv=make_mv(imageResizer={"width": 160})),
        plan_of(mv=make_mv(augmentation=[])),
        plan_of(view=make_view(concepts=("dog", "cat", "bird", "fish"))),
        plan_of(view=make_view(task="tagging")),
    ]
    hashes = [p.training_hash() for p in changed]
    assert base not in hashes
    assert len(set(hashes)) == len(hashes)


def test_training_hash_of_a_split_without_test_fraction_is_todays() -> None:
    # The hash of plan_of() computed before testFraction existed (main at 7bc9708): an output
    # trained then still resumes, whether the spec leaves testFraction out or writes 0.
    today = "54c1284f81d0afe42737f049795dd1bc37931b6878d86a1dc7c1d49b0114511b"
    assert plan_of().training_hash() == today
    assert plan_of(mv=make_mv(datasetSplit={"testFraction": 0})).training_hash() == today
    with_test = plan_of(mv=make_mv(datasetSplit={"testFraction": 0.1})).training_hash()
    other_test = plan_of(mv=make_mv(datasetSplit={"testFraction": 0.2})).training_hash()
    assert len({today, with_test, other_test}) == 3


def test_training_hash_ignores_compile() -> None:
    # The hash of plan_of() before spec.training.compile existed (the testFraction test's): an
    # output trained then resumes, and a run may resume with compiling switched on or off.
    today = "54c1284f81d0afe42737f049795dd1bc37931b6878d86a1dc7c1d49b0114511b"
    for compile_ in (False, True):
        plan = plan_of(mv=make_mv(training={"compile": compile_}))
        assert plan.spec.training.compile is compile_
        assert plan.training_hash() == today


def test_training_hash_ignores_concept_order() -> None:
    reordered = plan_of(view=make_view(concepts=("bird", "dog", "cat")))
    assert reordered.training_hash() == plan_of().training_hash()


def test_storage_secrets_name_each_roles_secret() -> None:
    view = make_view()
    view.spec.dataset.credentials_secret_ref = LocalObjectReference(name="data-reader")
    defaults = PlanDefaults(output_base_uri=BASE, output_credentials_secret="operator-writer")
    default_output = resolve(view, make_mv(), defaults)
    assert default_output.storage_secrets == StorageSecrets(
        dataset="data-reader", output="operator-writer"
    )
    # The operator's Secret belongs to its default location, not to a URI of the user's.
    own_uri = resolve(view, make_mv(output={"uri": "s3://mine/run"}), defaults)
    assert own_uri.storage_secrets == StorageSecrets(dataset="data-reader")
    own_secret = resolve(
        view,
        make_mv(
            output={"credentialsSecretRef": {"name": "writer"}},
            pretrainedWeights={"uri": "s3://w/b.pt", "credentialsSecretRef": {"name": "w"}},
        ),
        defaults,
    )
    secrets = own_secret.storage_secrets
    assert secrets == StorageSecrets(dataset="data-reader", output="writer", weights="w")
    assert [secrets.of(role) for role in StorageRole] == ["data-reader", "writer", "w"]
