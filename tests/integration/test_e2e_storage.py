"""End to end, storage identities: the real operator renders each role's Secret into the
trainer's environment, the node agent runs the real trainer, and the real S3 server enforces
who may touch which bucket (``services.start_seaweedfs``'s scoped identities)."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from testenv.operator_helpers import condition
from tests.integration import e2e_helpers as h
from tests.integration import services
from tests.integration.e2e_helpers import e2e  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


def _secret(name: str, namespace: str, env: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": env,
    }


def test_dataset_and_output_each_with_its_own_secret(e2e: h.E2E, node_agent: Any) -> None:  # noqa: F811
    """Dataset Secret A may read bucket A alone, output Secret B may write bucket B alone:
    the training succeeds, with its records and checkpoint in bucket B."""
    if e2e.s3.kind != "seaweedfs":
        pytest.skip("moto accepts any credentials")
    dataset_bucket, output_bucket = sorted(e2e.s3.scoped)
    env_a, env_b = e2e.s3.scoped_env(dataset_bucket), e2e.s3.scoped_env(output_bucket)
    # The server refuses each identity the other's bucket, so one Secret cannot do both.
    identity_a = dataclasses.replace(
        e2e.s3, access_key=env_a["AWS_ACCESS_KEY_ID"], secret_key=env_a["AWS_SECRET_ACCESS_KEY"]
    )
    with pytest.raises(ClientError, match="AccessDenied"):
        identity_a.client().put_object(Bucket=output_bucket, Key="probe", Body=b"x")

    source = dataclasses.replace(e2e, bucket=dataset_bucket)
    dataset = h.classification_dataset(source, per_class=6, prefix=f"roles-{e2e.namespace}")
    output = dataclasses.replace(e2e, bucket=output_bucket)
    name = "roles-e2e"
    view = h.view("roles", dataset)
    view["spec"]["dataset"]["credentialsSecretRef"] = {"name": "dataset-a"}
    mv = h.modelversion(output, name, "roles", epochs=1)
    mv["spec"]["output"] = {
        "uri": f"s3://{output_bucket}/{e2e.namespace}/{name}/",
        "credentialsSecretRef": {"name": "output-b"},
    }
    node_agent()
    watcher = h.Watcher(e2e, name)
    with e2e.operator():
        e2e.apply(
            _secret("dataset-a", e2e.namespace, env_a),
            _secret("output-b", e2e.namespace, env_b),
            view,
            mv,
        )
        obj = watcher.finished(timeout=600)

    assert h.outcome(obj) == "Succeeded", json.dumps(obj.get("status"), indent=1)
    prefix = f"{e2e.namespace}/{name}"
    card = output.read(f"{prefix}/model.json")
    assert card is not None and json.loads(card)["concepts"] == sorted(dataset.concepts)
    best = output.read(f"{prefix}/checkpoints/best.pt")
    assert best is not None
    assert obj["status"]["checkpoint"]["bytes"] == len(best)
    # Nothing was written beside the dataset.
    listing = e2e.client.list_objects_v2(Bucket=dataset_bucket, Prefix=prefix)
    assert listing.get("KeyCount", 0) == 0


def _unreachable(env: h.E2E, bucket: str) -> dict[str, str]:
    closed = f"http://127.0.0.1:{services.free_port()}"
    return {**env.s3.scoped_env(bucket), "AWS_ENDPOINT_URL_S3": closed}


OUTPUT_FAULTS = ("closed-endpoint", "missing-bucket", "read-only-identity")


@pytest.mark.parametrize("fault", OUTPUT_FAULTS)
def test_output_storage_faults_fail_fast_once_and_by_name(
    e2e: h.E2E,  # noqa: F811
    node_agent: Any,
    fault: str,
) -> None:
    """The output Secret points at a closed port, at a bucket that does not exist, or at an
    identity that may read but not write: the run fails within 20 s of its Job's creation,
    with one attempt, reason StorageCheckFailed and a message naming the endpoint, the bucket
    and the Secret."""
    if e2e.s3.kind != "seaweedfs":
        pytest.skip("moto accepts any credentials")
    dataset_bucket = min(e2e.s3.scoped)
    source = dataclasses.replace(e2e, bucket=dataset_bucket)
    dataset = h.classification_dataset(source, per_class=6, prefix=f"faults-{e2e.namespace}")
    if fault == "closed-endpoint":
        output_env, bucket = _unreachable(e2e, dataset_bucket), dataset_bucket
        code = "EndpointConnectionError"
    elif fault == "missing-bucket":
        output_env, bucket, code = e2e.s3.env(), f"missing-{e2e.namespace}", "NoSuchBucket"
    else:
        output_env, bucket, code = e2e.s3.read_only_env(), dataset_bucket, "AccessDenied"
    name = f"out-{fault}"
    view = h.view("faults", dataset)
    view["spec"]["dataset"]["credentialsSecretRef"] = {"name": "dataset-a"}
    mv = h.modelversion(e2e, name, "faults", epochs=1)
    mv["spec"]["output"] = {
        "uri": f"s3://{bucket}/{e2e.namespace}/{name}/",
        "credentialsSecretRef": {"name": "output-b"},
    }
    mv["spec"]["runPolicy"] = {"backoffLimit": 2}
    node_agent()
    watcher = h.Watcher(e2e, name)
    with e2e.operator():
        e2e.apply(
            _secret("dataset-a", e2e.namespace, e2e.s3.scoped_env(dataset_bucket)),
            _secret("output-b", e2e.namespace, output_env),
            view,
            mv,
        )
        obj = watcher.finished(timeout=300)

    assert h.outcome(obj) == "Failed", json.dumps(obj.get("status"), indent=1)
    failed = condition(obj, "Failed")
    assert failed is not None and failed["reason"] == "StorageCheckFailed", failed
    message = failed["message"]
    assert "with Secret 'output-b'" in message and f"s3://{bucket}/" in message, message
    assert f": {code}: " in message and output_env["AWS_ENDPOINT_URL_S3"] in message, message
    # One attempt: the exit code says no retry can mend it (the pod failure policy).
    (job,) = e2e.jobs()
    assert len(e2e.pods(job["metadata"]["name"])) == 1
    assert obj["status"]["attempts"] == 1
    created = datetime.fromisoformat(job["metadata"]["creationTimestamp"])
    ended = datetime.fromisoformat(failed["lastTransitionTime"])
    print(f"{fault}: Failed {(ended - created).total_seconds():.0f} s after the Job's creation")
    assert (ended - created).total_seconds() < 20, (created, ended)
    loading = next(s for s in obj["status"]["steps"] if s["name"] == "LoadingDataset")
    assert loading["state"] == "Failed", loading
