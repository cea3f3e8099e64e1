"""Child names and label values: deterministic, valid, and distinct for distinct inputs."""

from __future__ import annotations

import re

import pytest

from kubevision_operator import naming
from tests.operator.operator_helpers import modelversion

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def test_short_names_are_kept() -> None:
    assert naming.job_name("pets-v1") == "kv-pets-v1"
    assert naming.configmap_name("pets-v1") == "kv-pets-v1-plan"


@pytest.mark.parametrize("length", [60, 61, 63])
def test_long_job_names_are_cut_with_a_hash(length: int) -> None:
    name = ("a" * (length - 2)) + "-b"
    job = naming.job_name(name)
    assert len(job) <= 63 and DNS_LABEL.match(job)
    assert job == naming.job_name(name)  # deterministic
    other = ("a" * (length - 2)) + "-c"
    assert naming.job_name(other) != job  # same prefix, other name


def test_sixty_character_names_fit_without_hash() -> None:
    name = "x" * 60
    assert naming.job_name(name) == f"kv-{name}"


def test_job_name_refuses_a_non_dns_label() -> None:
    with pytest.raises(ValueError, match="not a DNS label"):
        naming.job_name("Bad_Name")


@pytest.mark.parametrize(
    "text",
    [
        "pets",
        "a" * 63,
        "a" * 64,
        "my.view.with.dots",
        "view.example.com." + "x" * 200,
        "-leading-and-trailing-",
        "UPPER_and_lower",
        "..",
    ],
)
def test_label_values_are_valid(text: str) -> None:
    value = naming.label_value(text)
    assert len(value) <= 63 and LABEL_VALUE.match(value), value
    if len(text) <= 63 and LABEL_VALUE.match(text):
        assert value == text  # valid values are kept as they are


def test_sanitised_values_keep_distinct_inputs_distinct() -> None:
    long = "v" * 70
    assert naming.label_value(long) != naming.label_value(long + "w")
    assert naming.label_value("-a") != naming.label_value("a-")


def test_labels_and_selector() -> None:
    mv = modelversion()
    labels = naming.labels(mv, "m0123456789ab")
    assert labels == {
        "app.kubernetes.io/managed-by": "kubevision",
        "app.kubernetes.io/component": "trainer",
        "kubevision.dev/view": "pets",
        "kubevision.dev/model": "m0123456789ab",
        "kubevision.dev/modelversion": "pets-v1",
    }
    assert naming.selector(mv) == (
        "app.kubernetes.io/managed-by=kubevision,kubevision.dev/modelversion=pets-v1"
    )
