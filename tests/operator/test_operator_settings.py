"""OperatorSettings: defaults, the environment over defaults, init values over the
environment (what the CLI's flags use), and validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kubevision_operator.settings import OperatorSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("KUBEVISION_"):
            monkeypatch.delenv(key)


def test_defaults() -> None:
    cfg = OperatorSettings()
    assert cfg.namespaces == []
    assert cfg.gpu_resource_name == "nvidia.com/gpu"
    assert cfg.trainer_metrics_port == 9090
    assert cfg.concurrency_limit == 0
    assert cfg.trainer_command_override is None
    assert cfg.crd_mismatch == "Refuse"
    assert 0 < cfg.watch_server_timeout_seconds < cfg.watch_client_timeout_seconds


def test_every_field_is_described() -> None:
    for name, info in OperatorSettings.model_fields.items():
        assert info.description, f"{name} has no description (--help shows it)"


def test_environment_beats_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEVISION_NAMESPACES", "team-b, team-a,team-b")
    monkeypatch.setenv("KUBEVISION_CONCURRENCY_LIMIT", "5")
    monkeypatch.setenv("KUBEVISION_GPU_RESOURCE_NAME", "amd.com/gpu")
    monkeypatch.setenv("KUBEVISION_OUTPUT_BASE_URI", "s3://bucket/runs/")
    monkeypatch.setenv("KUBEVISION_TRAINER_COMMAND_OVERRIDE", '["python", "-m", "stub"]')
    monkeypatch.setenv("KUBEVISION_STATUS_URL", "https://op.kv.svc:8443")
    monkeypatch.setenv("KUBEVISION_CRD_MISMATCH", "Condition")
    cfg = OperatorSettings()
    assert cfg.crd_mismatch == "Condition"
    assert cfg.namespaces == ["team-a", "team-b"]
    assert cfg.concurrency_limit == 5
    assert cfg.gpu_resource_name == "amd.com/gpu"
    assert cfg.output_base_uri == "s3://bucket/runs"
    assert cfg.trainer_command_override == ["python", "-m", "stub"]
    assert cfg.status_url == "https://op.kv.svc:8443"


def test_init_values_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEVISION_CONCURRENCY_LIMIT", "5")
    assert OperatorSettings(concurrency_limit=7).concurrency_limit == 7


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("namespaces", "Team_A"),
        ("watch_client_timeout_seconds", "300"),
        ("shm_size_limit", "lots"),
        ("image_pull_policy", "Sometimes"),
        ("concurrency_limit", "-1"),
        ("trainer_command_override", "[]"),
        ("crd_mismatch", "Ignore"),
    ],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, field: str, value: str) -> None:
    monkeypatch.setenv(f"KUBEVISION_{field.upper()}", value)
    with pytest.raises(ValidationError):
        OperatorSettings()


def test_plan_defaults() -> None:
    cfg = OperatorSettings(status_url="https://op:8443", pushgateway_url="http://pgw:9091")
    defaults = cfg.plan_defaults("CA")
    assert defaults.status_url == "https://op:8443" and defaults.status_ca_pem == "CA"
    assert defaults.pushgateway_url == "http://pgw:9091"
    assert defaults.metrics_port == 9090
    quiet = OperatorSettings(trainer_metrics_port=0).plan_defaults("CA")
    assert quiet.metrics_port is None
    assert quiet.status_url is None and quiet.status_ca_pem is None
