"""View: the model id is the documented hash, and ViewSpec refuses specs a trainer cannot use."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from pydantic import ValidationError

from kubevision_api.view import Task, View, ViewSpec, model_id


def view_spec(
    task: str = "classification",
    concepts: tuple[str, ...] = ("cat", "dog"),
    fmt: str = "coco",
) -> dict[str, Any]:
    return {
        "task": task,
        "concepts": [{"name": name} for name in concepts],
        "dataset": {"uri": "s3://bucket/coco.json", "format": fmt},
    }


def test_model_id_literal() -> None:
    # sha256(b'["classification",["cat","dog"]]').hexdigest() = "36291f4fc53d..." (computed
    # once with hashlib); a literal catches any change of the payload's spacing or order.
    assert model_id(Task.CLASSIFICATION, ["cat", "dog"]) == "m36291f4fc53d"


def test_model_id_is_the_documented_formula() -> None:
    payload = json.dumps(["tagging", ["a", "b c"]], separators=(",", ":"))
    expected = "m" + hashlib.sha256(payload.encode()).hexdigest()[:12]
    assert model_id(Task.TAGGING, ["b c", "a"]) == expected


def test_model_id_ignores_concept_order() -> None:
    assert model_id(Task.DETECTION, ["dog", "cat", "bird"]) == model_id(
        Task.DETECTION, ["bird", "cat", "dog"]
    )


def test_model_id_changes_with_concepts_and_task() -> None:
    base = model_id(Task.CLASSIFICATION, ["cat", "dog"])
    # sha256(b'["classification",["bird","cat","dog"]]') starts "f7f1b1546c69".
    assert model_id(Task.CLASSIFICATION, ["cat", "dog", "bird"]) == "mf7f1b1546c69"
    assert model_id(Task.CLASSIFICATION, ["cat"]) != base
    assert model_id(Task.TAGGING, ["cat", "dog"]) not in {base, "mf7f1b1546c69"}


def test_valid_spec_and_concept_names_sorted() -> None:
    spec = ViewSpec.model_validate(view_spec(concepts=("zebra", "ant", "Moth")))
    # Sorted by code point: uppercase before lowercase, as Python's sorted() (docs/decisions.md).
    assert spec.concept_names() == ["Moth", "ant", "zebra"]


def test_rejects_duplicate_concepts() -> None:
    with pytest.raises(ValidationError, match=r"concepts\[2\]\.name: duplicate concept 'cat'"):
        ViewSpec.model_validate(view_spec(concepts=("cat", "dog", "cat")))


def test_rejects_format_that_cannot_carry_the_task() -> None:
    with pytest.raises(ValidationError, match="'imagefolder' cannot carry a tagging task"):
        ViewSpec.model_validate(view_spec(task="tagging", fmt="imagefolder"))


@pytest.mark.parametrize(
    ("task", "fmt"),
    [
        ("classification", "imagefolder"),
        ("tagging", "tags-csv"),
        ("tagging", "tags-jsonl"),
        ("detection", "coco"),
    ],
)
def test_accepts_formats_that_carry_the_task(task: str, fmt: str) -> None:
    assert ViewSpec.model_validate(view_spec(task=task, fmt=fmt)).task.value == task


@pytest.mark.parametrize("fmt", ["imagefolder", "tags-csv", "tags-jsonl"])
def test_detection_needs_coco(fmt: str) -> None:
    with pytest.raises(ValidationError, match="cannot carry a detection task"):
        ViewSpec.model_validate(view_spec(task="detection", fmt=fmt))


def test_classification_needs_two_concepts() -> None:
    with pytest.raises(ValidationError, match="needs at least 2 concepts"):
        ViewSpec.model_validate(view_spec(concepts=("cat",)))
    # One concept is a valid tagging or detection task (present or not / where).
    assert ViewSpec.model_validate(view_spec(task="tagging", concepts=("cat",)))
    assert ViewSpec.model_validate(view_spec(task="detection", concepts=("cat",)))


def test_rejects_empty_concepts_and_bad_names() -> None:
    with pytest.raises(ValidationError):
        ViewSpec.model_validate(view_spec(task="tagging", concepts=()))
    with pytest.raises(ValidationError, match=r"concepts\.0\.name"):
        ViewSpec.model_validate(view_spec(concepts=(" cat", "dog")))


def test_view_wire_is_camel_case_and_rejects_unknown_fields() -> None:
    doc = {
        "apiVersion": "kubevision.dev/v1alpha1",
        "kind": "View",
        "metadata": {"name": "pets"},
        "spec": view_spec(),
    }
    view = View.model_validate(doc)
    wire = view.wire()
    assert wire["apiVersion"] == "kubevision.dev/v1alpha1"
    assert wire["metadata"]["namespace"] == "default"
    assert "status" not in wire  # None is left out
    doc["spec"] = {**view_spec(), "Task": "tagging"}
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        View.model_validate(doc)
