"""The Job's interface (``kubevision_api.contract``): outcomes round-trip through the
termination line, and every literal that the operator and the trainer share is spelt in the
contract module alone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kubevision_api import contract
from kubevision_api.contract import Outcome, StorageRole

ROOT = Path(__file__).resolve().parents[2]
#: The product's packages: the operator's and the trainer's sides of the Job, and what both use.
PACKAGES = ("api", "trainer", "operator", "cli")
CONTRACT = ROOT / "api" / "kubevision_api" / "contract.py"


@pytest.mark.parametrize("outcome", list(Outcome), ids=lambda o: o.reason)
def test_every_outcome_round_trips_through_the_termination_line(outcome: Outcome) -> None:
    line = contract.termination_line(outcome, "s3://bucket/key: AccessDenied (endpoint x)")
    assert line == f"{outcome.reason}: s3://bucket/key: AccessDenied (endpoint x)"
    assert contract.parse_termination(line) == (
        outcome,
        "s3://bucket/key: AccessDenied (endpoint x)",
    )
    assert contract.parse_termination(line + "\n") == (outcome, line.split(": ", 1)[1])


def test_reasons_and_exit_codes() -> None:
    table = {o.reason: (o.exit_code, o.retry) for o in Outcome}
    assert table == {
        "Succeeded": (0, False),
        "InvalidInput": (2, False),
        "TrainingFailed": (1, True),
        "Preempted": (143, True),
        "StorageCheckFailed": (3, False),
        "StorageError": (1, True),
        "CheckpointUploadFailed": (1, True),
        "NonFiniteLoss": (4, False),
        "ExportFailed": (5, False),
        "Error": (1, True),
    }
    assert contract.no_retry_exit_codes() == [2, 3, 4, 5]
    for outcome in Outcome:
        assert Outcome.from_reason(outcome.reason) is outcome
    assert Outcome.from_reason("OOMKilled") is None


def test_a_message_becomes_one_line_within_the_kubernetes_limit() -> None:
    line = contract.termination_line(Outcome.ERROR, "first\nsecond\r\n\tthird")
    assert line == "Error: first second third"
    long = contract.termination_line(Outcome.INVALID_INPUT, "é" * 5000)
    assert len(long.encode()) <= contract.MAX_TERMINATION_BYTES
    assert long.endswith("...")
    parsed = contract.parse_termination(long)
    assert parsed is not None and parsed[0] is Outcome.INVALID_INPUT


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Traceback (most recent call last):\n  File x\nValueError: boom",
        "OOMKilled: the reason is not the trainer's",
        "invalidInput: lower case",
        "InvalidInput:no space",
        "InvalidInput: two\nlines",
    ],
)
def test_other_texts_are_not_termination_lines(text: str) -> None:
    assert contract.parse_termination(text) is None


def test_role_variables() -> None:
    assert [contract.role_variable(r, contract.AWS_ACCESS_KEY_ID) for r in StorageRole] == [
        "KUBEVISION_DATASET_AWS_ACCESS_KEY_ID",
        "KUBEVISION_OUTPUT_AWS_ACCESS_KEY_ID",
        "KUBEVISION_WEIGHTS_AWS_ACCESS_KEY_ID",
    ]
    assert contract.report_path("ns", "mv") == "/v1alpha1/namespaces/ns/modelversions/mv/report"
    assert contract.trainer_command() == [
        "kubevision",
        "trainer",
        "--plan",
        "/etc/kubevision/plan.json",
        "--termination-log",
        "/dev/termination-log",
    ]


def _sources() -> list[Path]:
    files = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    assert CONTRACT in files
    return [p for p in files if p != CONTRACT]


def _quoted(value: str) -> re.Pattern[str]:
    """``value`` as a string literal, or as the start of one (an f-string's head)."""
    return re.compile(r"""[rbf]?["']""" + re.escape(value) + r"""(["'{:/]|$)""")


#: What the two sides share, each as the literal that must appear in the contract alone.
SHARED_LITERALS = [
    contract.PLAN_DIR,
    contract.PLAN_FILE,
    contract.TERMINATION_LOG,
    contract.CACHE_DIR,
    contract.ENV_CACHE_DIR,
    contract.ENV_STATUS_TOKEN_PATH,
    contract.TOKEN_PATH,
    contract.PLAN_FLAG,
    contract.TERMINATION_LOG_FLAG,
    contract.ENV_PREFIX,
    "/namespaces/",
    *[key for key, _ in contract.AWS_KEYS],
    *[o.reason for o in Outcome if o is not Outcome.SUCCEEDED],
]


#: Where a reason word is a key of another protocol's document, not the reason: botocore's
#: ``response["Error"]``.
_OTHER_PROTOCOLS = re.compile(r"""(get\(|\[)["']Error["']""")


@pytest.mark.parametrize("literal", SHARED_LITERALS)
def test_shared_literals_are_spelt_in_the_contract_alone(literal: str) -> None:
    pattern = _quoted(literal)
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _sources()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(_OTHER_PROTOCOLS.sub("", line))
    ]
    assert found == [], f"{literal!r} is spelt outside kubevision_api.contract"


def test_exit_codes_and_the_container_name_are_spelt_in_the_contract_alone() -> None:
    patterns = {
        "the container name": re.compile(r"""(==|"name":)\s*["']trainer["']"""),
        "an exit code": re.compile(r"\b(return|exit_code ==|sys\.exit\()\s*(2|143)\b"),
        "the preemption exit code": re.compile(r"\b143\b(?! preempted)"),
    }
    found = [
        f"{what}: {path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _sources()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        for what, pattern in patterns.items()
        if pattern.search(line)
    ]
    assert found == []


def test_the_grep_finds_a_literal_spelt_twice(tmp_path: Path) -> None:
    """The check above can fail: a module that spells a shared literal is found."""
    line = 'termination = "/dev/termination-log"  # spelt again'
    assert _quoted(contract.TERMINATION_LOG).search(line)
    assert _quoted("InvalidInput").search('f"InvalidInput: {exc}"')
    assert not _quoted("InvalidInput").search("raise InvalidInputError()")
