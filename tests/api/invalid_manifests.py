"""One table of bad manifests, shared by the unit test (pydantic) and the integration test (the
real API server, ``fieldValidation=Strict``): both must refuse each case, naming ``path``.

Three operations:

- ``create``: the manifest is created; pydantic's ``model_validate`` must fail at ``path``.
- ``update``: ``old`` is created, then replaced by ``manifest`` (a valid object on its own);
  the CRD's transition rules must refuse it, and so must ``crdgen.immutable_changes``.
- ``status``: the object is created without status, then ``manifest``'s status is written
  through the status subresource; pydantic must fail validating the whole object.

``VALID_UPDATES`` holds updates that both must accept, so the immutability rules are shown
not to refuse too much.

``path`` is the exact field path that the API server names (``spec.concepts[2]`` for a
duplicate key, ``spec.training`` for a change anywhere inside an immutable sub-object).
Each case's object is named after the case, unless the case is about the name.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

Operation = Literal["create", "update", "status"]
Kind = Literal["View", "ModelVersion"]


def view(name: str = "pets", **spec: Any) -> dict[str, Any]:
    """A valid View: classification of cats and dogs, COCO annotations."""
    doc: dict[str, Any] = {
        "apiVersion": "kubevision.dev/v1alpha1",
        "kind": "View",
        "metadata": {"name": name},
        "spec": {
            "task": "classification",
            "concepts": [{"name": "cat"}, {"name": "dog", "description": "Any dog."}],
            "dataset": {"uri": "s3://datasets/pets/coco.json", "format": "coco"},
        },
    }
    doc["spec"].update(spec)
    return doc


def model_version(name: str = "pets-r18", **spec: Any) -> dict[str, Any]:
    """A valid ModelVersion of ``pets``, with a few explicit options."""
    doc: dict[str, Any] = {
        "apiVersion": "kubevision.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": name},
        "spec": {
            "viewRef": {"name": "pets"},
            "architecture": "resnet18",
            "training": {"epochs": 6, "batchSize": 64},
            "resources": {"gpus": 0, "cpu": "2", "memory": "4Gi"},
        },
    }
    doc["spec"].update(spec)
    return doc


def edit(
    doc: dict[str, Any], path: str, value: Any = None, *, remove: bool = False
) -> dict[str, Any]:
    """A deep copy of ``doc`` with ``path`` (dotted; ``[i]`` for list items) set to ``value``,
    or removed."""
    out = copy.deepcopy(doc)
    parts: list[str | int] = []
    for part in path.split("."):
        key, _, index = part.partition("[")
        parts.append(key)
        if index:
            parts.append(int(index.rstrip("]")))
    node: Any = out
    for step in parts[:-1]:
        if isinstance(step, str) and step not in node:
            node[step] = {}
        node = node[step]
    if remove:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return out


@dataclass(frozen=True)
class Case:
    """One bad manifest and where both validators must say it is wrong."""

    id: str
    operation: Operation
    manifest: dict[str, Any]
    path: str
    old: dict[str, Any] | None = None
    why: str = ""

    @property
    def kind(self) -> Kind:
        """View or ModelVersion."""
        kind: Kind = self.manifest["kind"]
        return kind


def _named(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return edit(doc, "metadata.name", name)


def _create(case_id: str, doc: dict[str, Any], path: str, why: str = "") -> Case:
    return Case(case_id, "create", _named(doc, case_id), path, why=why)


def _update(case_id: str, old: dict[str, Any], new: dict[str, Any], path: str) -> Case:
    return Case(case_id, "update", _named(new, case_id), path, old=_named(old, case_id))


def _status(case_id: str, doc: dict[str, Any], path: str) -> Case:
    return Case(case_id, "status", _named(doc, case_id), path)


_CONDITION = {
    "type": "Ready",
    "status": "True",
    "reason": "Resolved",
    "message": "The dataset was found.",
    "lastTransitionTime": "2025-01-01T00:00:00Z",
}
_STEP = {"name": "Scheduling", "state": "Succeeded"}
_MV_WEIGHTS = model_version(pretrainedWeights={"uri": "s3://models/resnet18.pt"})

CASES: tuple[Case, ...] = (
    # ---- View: unknown fields, enums, bounds, list map keys, CEL rules, names ---------------
    _create("view-unknown-spec-field", edit(view(), "spec.colour", "blue"), "spec.colour"),
    _create(
        "view-unknown-nested-field",
        edit(view(), "spec.dataset.region", "eu"),
        "spec.dataset.region",
    ),
    _create("view-task-enum", edit(view(), "spec.task", "segmentation"), "spec.task"),
    _create("view-format-enum", edit(view(), "spec.dataset.format", "voc"), "spec.dataset.format"),
    _create(
        "view-duplicate-concepts",
        edit(view(), "spec.concepts", [{"name": "cat"}, {"name": "dog"}, {"name": "cat"}]),
        "spec.concepts[2]",
        why="concepts is a list map keyed by name",
    ),
    _create(
        "view-concept-name-pattern",
        edit(view(), "spec.concepts[1].name", "-dog"),
        "spec.concepts[1].name",
    ),
    _create(
        "view-concept-description-too-long",
        edit(view(), "spec.concepts[0].description", "x" * 1025),
        "spec.concepts[0].description",
    ),
    _create("view-no-concepts", edit(view(), "spec.concepts", []), "spec.concepts"),
    _create(
        "view-classification-one-concept",
        edit(view(), "spec.concepts", [{"name": "cat"}]),
        "spec.concepts",
        why="CEL: a classification View needs at least 2 concepts",
    ),
    _create(
        "view-format-cannot-carry-task",
        edit(edit(view(), "spec.task", "tagging"), "spec.dataset.format", "imagefolder"),
        "spec.dataset.format",
        why="CEL: imagefolder carries classification only",
    ),
    _create("view-missing-dataset", edit(view(), "spec.dataset", remove=True), "spec.dataset"),
    Case("view-bad-name", "create", view(name="Pets_1"), "metadata.name"),
    Case(
        "view-name-not-a-dns-label",
        "create",
        view(name="pets.v1"),
        "metadata.name",
        why="CEL at the root: names become label values, so DNS labels only",
    ),
    _status(
        "view-undeclared-status-field",
        edit(view(), "status", {"conceptCount": 2, "colour": "blue"}),
        "status.colour",
    ),
    _status(
        "view-duplicate-conditions",
        edit(view(), "status", {"conditions": [_CONDITION, _CONDITION]}),
        "status.conditions[1]",
    ),
    _update("view-task-change", view(), edit(view(), "spec.task", "tagging"), "spec.task"),
    # ---- ModelVersion --------------------------------------------------------------------
    _create("mv-unknown-spec-field", edit(model_version(), "spec.epochs", 3), "spec.epochs"),
    _create(
        "mv-unknown-nested-field",
        edit(model_version(), "spec.training.epoch", 3),
        "spec.training.epoch",
    ),
    _create(
        "mv-epochs-zero", edit(model_version(), "spec.training.epochs", 0), "spec.training.epochs"
    ),
    _create(
        "mv-batch-size-zero",
        edit(model_version(), "spec.training.batchSize", 0),
        "spec.training.batchSize",
    ),
    _create(
        "mv-validation-fraction-one",
        edit(model_version(), "spec.datasetSplit", {"validationFraction": 1.0}),
        "spec.datasetSplit.validationFraction",
        why="exclusive maximum",
    ),
    _create(
        "mv-validation-fraction-zero",
        edit(model_version(), "spec.datasetSplit", {"validationFraction": 0}),
        "spec.datasetSplit.validationFraction",
        why="exclusive minimum",
    ),
    _create(
        "mv-test-fraction-one",
        edit(model_version(), "spec.datasetSplit", {"testFraction": 1}),
        "spec.datasetSplit.testFraction",
        why="exclusive maximum",
    ),
    _create(
        "mv-test-fraction-negative",
        edit(model_version(), "spec.datasetSplit", {"testFraction": -0.1}),
        "spec.datasetSplit.testFraction",
    ),
    _create(
        "mv-fractions-leave-no-training-image",
        edit(
            model_version(), "spec.datasetSplit", {"validationFraction": 0.4, "testFraction": 0.6}
        ),
        "spec.datasetSplit.testFraction",
        why="CEL on datasetSplit: validationFraction + testFraction < 1",
    ),
    _create(
        "mv-test-fraction-over-the-default-validation",
        edit(model_version(), "spec.datasetSplit", {"testFraction": 0.8}),
        "spec.datasetSplit.testFraction",
        why="CEL on datasetSplit, after the structural default validationFraction 0.2",
    ),
    _create(
        "mv-learning-rate-zero",
        edit(model_version(), "spec.training.learningRate", 0),
        "spec.training.learningRate",
    ),
    _create(
        "mv-architecture-unknown",
        edit(model_version(), "spec.architecture", "resnet19"),
        "spec.architecture",
    ),
    _create(
        "mv-optimizer-enum",
        edit(model_version(), "spec.training.optimizer", "rmsprop"),
        "spec.training.optimizer",
    ),
    _create(
        "mv-augmentation-name",
        edit(model_version(), "spec.augmentation", [{"name": "Flip"}]),
        "spec.augmentation[0].name",
    ),
    _create(
        "mv-width-not-multiple-of-16",
        edit(model_version(), "spec.imageResizer", {"width": 100}),
        "spec.imageResizer.width",
    ),
    _create("mv-nine-gpus", edit(model_version(), "spec.resources.gpus", 9), "spec.resources.gpus"),
    _create(
        "mv-batch-not-divisible-by-nodes",
        edit(model_version(), "spec.resources.nodes", 3),
        "spec.training.batchSize",
        why="CEL on the spec: the global batch (64) over 3 Pods x 1 process",
    ),
    _create(
        "mv-batch-not-divisible-by-processes",
        edit(
            edit(model_version(), "spec.resources.nodes", 2),
            "spec.resources.processesPerNode",
            3,
        ),
        "spec.training.batchSize",
        why="CEL on the spec: 64 over 2 Pods x 3 processes",
    ),
    _create(
        "mv-batch-not-divisible-by-gpus",
        edit(model_version(), "spec.resources", {"gpus": 3, "cpu": "2", "memory": "4Gi"}),
        "spec.training.batchSize",
        why="CEL on the spec: 64 over 1 Pod x 3 GPUs",
    ),
    _create(
        "mv-processes-per-node-with-gpus",
        edit(
            model_version(),
            "spec.resources",
            {"gpus": 2, "processesPerNode": 2, "cpu": "2", "memory": "4Gi"},
        ),
        "spec.resources.processesPerNode",
        why="CEL on resources: with GPUs, one process per GPU",
    ),
    _create(
        "mv-memory-not-a-quantity",
        edit(model_version(), "spec.resources.memory", "lots"),
        "spec.resources.memory",
    ),
    _create(
        "mv-missing-view-ref", edit(model_version(), "spec.viewRef", remove=True), "spec.viewRef"
    ),
    _create(
        "mv-view-ref-bad-name",
        edit(model_version(), "spec.viewRef.name", "Pets"),
        "spec.viewRef.name",
    ),
    Case("mv-name-too-long", "create", model_version(name="m" * 64), "metadata.name"),
    Case(
        "mv-gang-name-too-long",
        "create",
        edit(model_version(name="m" * 58), "spec.resources.nodes", 2),
        "metadata.name",
        why="CEL at the root: the Pods' hostnames kv-<name>-<index> are DNS labels",
    ),
    _status(
        "mv-undeclared-status-field",
        edit(model_version(), "status", {"progress": {"percent": 10, "eta": "5m"}}),
        "status.progress.eta",
    ),
    _status(
        "mv-status-step-enum",
        edit(model_version(), "status", {"currentStep": "Sleeping"}),
        "status.currentStep",
    ),
    _status(
        "mv-duplicate-steps",
        edit(model_version(), "status", {"steps": [_STEP, _STEP]}),
        "status.steps[1]",
    ),
    # ---- ModelVersion updates: spec is immutable but for two runPolicy fields -------------
    _update(
        "mv-architecture-change",
        model_version(),
        edit(model_version(), "spec.architecture", "resnet34"),
        "spec.architecture",
    ),
    _update(
        "mv-epochs-change",
        model_version(),
        edit(model_version(), "spec.training.epochs", 7),
        "spec.training",
    ),
    _update(
        "mv-training-removed",
        model_version(),
        edit(model_version(), "spec.training", remove=True),
        "spec.training",
    ),
    _update(
        "mv-view-ref-change",
        model_version(),
        edit(model_version(), "spec.viewRef.name", "dogs"),
        "spec.viewRef",
    ),
    _update("mv-weights-added", model_version(), _MV_WEIGHTS, "spec.pretrainedWeights"),
    _update("mv-weights-removed", _MV_WEIGHTS, model_version(), "spec.pretrainedWeights"),
    _update(
        "mv-augmentation-change",
        model_version(),
        edit(model_version(), "spec.augmentation", [{"name": "Brightness"}]),
        "spec.augmentation",
    ),
    _update(
        "mv-backoff-limit-change",
        model_version(),
        edit(model_version(), "spec.runPolicy", {"backoffLimit": 5}),
        "spec.runPolicy.backoffLimit",
    ),
    _update(
        "mv-queue-name-added",
        model_version(),
        edit(model_version(), "spec.runPolicy", {"queueName": "gpu"}),
        "spec.runPolicy.queueName",
    ),
)


@dataclass(frozen=True)
class ValidUpdate:
    """An update that both the API server and ``crdgen.immutable_changes`` accept."""

    id: str
    old: dict[str, Any]
    new: dict[str, Any]
    why: str = field(default="")


VALID_UPDATES: tuple[ValidUpdate, ...] = tuple(
    ValidUpdate(case_id, _named(old, case_id), _named(new, case_id), why)
    for case_id, old, new, why in (
        (
            "view-concepts-change",
            view(),
            edit(view(), "spec.concepts", [{"name": "cat"}, {"name": "dog"}, {"name": "fox"}]),
            "concepts may change: that makes a new model id",
        ),
        (
            "mv-suspend",
            model_version(),
            edit(model_version(), "spec.runPolicy", {"suspend": True}),
            "runPolicy.suspend is mutable",
        ),
        (
            "mv-deadline-added",
            model_version(),
            edit(model_version(), "spec.runPolicy", {"activeDeadlineSeconds": 3600}),
            "runPolicy.activeDeadlineSeconds is mutable, added...",
        ),
        (
            "mv-deadline-removed",
            edit(model_version(), "spec.runPolicy", {"activeDeadlineSeconds": 3600}),
            model_version(),
            "...and removed",
        ),
        (
            "mv-defaults-written-out",
            model_version(),
            edit(model_version(), "spec.training", {"epochs": 6, "batchSize": 64, "seed": 0}),
            "writing a default out is no change",
        ),
        (
            "mv-labels",
            model_version(),
            edit(model_version(), "metadata.labels", {"team": "vision"}),
            "metadata is not spec",
        ),
    )
)
