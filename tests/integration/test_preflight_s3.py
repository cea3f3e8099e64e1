"""The storage pre-flight against the real S3 server: each role is tried with its own
identity; a closed endpoint, a missing bucket, a read-only identity and a missing dataset fail
within seconds with one line naming the role, the Secret, the URI, the error code and the
endpoint."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from kubevision_api import contract
from kubevision_api.contract import StorageRole
from kubevision_api.errors import InputError
from kubevision_api.modelversion import ModelVersion
from kubevision_api.plan import PlanDefaults, TrainingPlan, resolve
from kubevision_api.view import View
from kubevision_trainer import preflight
from tests.integration import services


def _plan(dataset_uri: str, output_uri: str, fmt: str = "coco") -> TrainingPlan:
    view = View.model_validate(
        {
            "metadata": {"name": "v", "namespace": "ns"},
            "spec": {
                "task": "classification",
                "concepts": [{"name": "a"}, {"name": "b"}],
                "dataset": {
                    "uri": dataset_uri,
                    "format": fmt,
                    "credentialsSecretRef": {"name": "dataset-a"},
                },
            },
        }
    )
    mv = ModelVersion.model_validate(
        {
            "metadata": {"name": "mv", "namespace": "ns", "uid": "u-1"},
            "spec": {
                "viewRef": {"name": "v"},
                "architecture": "resnet18",
                "output": {"uri": output_uri, "credentialsSecretRef": {"name": "output-b"}},
            },
        }
    )
    return resolve(view, mv, PlanDefaults())


@pytest.fixture
def roles(s3_env: services.S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Dataset identity A (plain ``AWS_*``) with an annotation file in bucket A; output
    identity B (``KUBEVISION_OUTPUT_AWS_*``) for bucket B."""
    if s3_env.kind != "seaweedfs":
        pytest.skip("moto accepts any credentials")
    bucket_a, bucket_b = sorted(s3_env.scoped)
    key = f"{uuid.uuid4().hex[:8]}/coco.json"
    s3_env.client().put_object(Bucket=bucket_a, Key=key, Body=b"{}")
    for name, value in s3_env.scoped_env(bucket_a).items():
        monkeypatch.setenv(name, value)
    output_env = s3_env.scoped_env(bucket_b)
    for name, value in output_env.items():
        monkeypatch.setenv(contract.role_variable(StorageRole.OUTPUT, name), value)
    return {
        "dataset": f"s3://{bucket_a}/{key}",
        "output": f"s3://{bucket_b}/{uuid.uuid4().hex[:8]}/",
        "bucket_b": bucket_b,
        "output_env": output_env,
    }


def test_a_healthy_setup_passes_and_leaves_nothing(
    roles: dict[str, Any], s3_env: services.S3Server
) -> None:
    preflight.check(_plan(roles["dataset"], roles["output"]))
    prefix = roles["output"].split("/", 3)[3]
    listing = s3_env.client().list_objects_v2(Bucket=roles["bucket_b"], Prefix=prefix)
    assert listing.get("KeyCount", 0) == 0


def test_closed_output_endpoint_fails_within_seconds(
    roles: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = f"http://127.0.0.1:{services.free_port()}"
    monkeypatch.setenv(
        contract.role_variable(StorageRole.OUTPUT, contract.AWS_ENDPOINT_URL_S3), closed
    )
    started = time.monotonic()
    with pytest.raises(preflight.PreflightError) as caught:
        preflight.check(_plan(roles["dataset"], roles["output"]))
    took = time.monotonic() - started
    message = str(caught.value)
    assert message.startswith(
        f"output storage cannot write under {roles['output']} with Secret 'output-b': "
        f"{roles['output']}: "
    ), message
    assert ": EndpointConnectionError: " in message and message.endswith(f"(endpoint {closed})")
    assert caught.value.code == "EndpointConnectionError"
    print(f"closed endpoint: failed after {took:.1f} s")
    assert took < 10, took


def test_missing_output_bucket(
    roles: dict[str, Any], s3_env: services.S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even an identity that may create buckets (SeaweedFS would on the first write) is told
    the bucket is missing: kubevision never creates one."""
    for name, value in s3_env.env().items():
        monkeypatch.setenv(contract.role_variable(StorageRole.OUTPUT, name), value)
    missing = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/run/"
    with pytest.raises(preflight.PreflightError) as caught:
        preflight.check(_plan(roles["dataset"], missing))
    assert caught.value.code == "NoSuchBucket", str(caught.value)
    assert str(caught.value).startswith(f"output storage cannot write under {missing}")
    assert s3_env.endpoint_url in str(caught.value)


def test_read_only_output_identity(
    roles: dict[str, Any], s3_env: services.S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An identity that may read and list the output bucket but not write it."""
    bucket = min(s3_env.scoped)
    for name, value in s3_env.read_only_env().items():
        monkeypatch.setenv(contract.role_variable(StorageRole.OUTPUT, name), value)
    output = f"s3://{bucket}/{uuid.uuid4().hex[:8]}/"
    with pytest.raises(preflight.PreflightError) as caught:
        preflight.check(_plan(roles["dataset"], output))
    assert caught.value.code == "AccessDenied", str(caught.value)
    assert "with Secret 'output-b'" in str(caught.value)


def test_dataset_of_another_identity_and_missing_dataset(
    roles: dict[str, Any], s3_env: services.S3Server
) -> None:
    # The dataset identity may not read bucket B.
    foreign = f"s3://{roles['bucket_b']}/x/coco.json"
    with pytest.raises(preflight.PreflightError) as caught:
        preflight.check(_plan(foreign, roles["output"]))
    assert str(caught.value).startswith(
        f"dataset storage cannot read the dataset with Secret 'dataset-a': {foreign}: "
    )
    assert caught.value.code in ("AccessDenied", "403"), str(caught.value)
    absent = roles["dataset"].replace("coco.json", "absent.json")
    with pytest.raises(InputError, match=r"absent\.json: file not found$"):
        preflight.check(_plan(absent, roles["output"]))
