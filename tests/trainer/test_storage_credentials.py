"""Which credentials each storage role uses (``storage.credentials``), from the variables the
operator renders (``render.credential_env``)."""

from __future__ import annotations

from kubevision_api import contract
from kubevision_api.contract import StorageRole
from kubevision_trainer import storage

PLAIN = {
    "AWS_ACCESS_KEY_ID": "dataset-key",
    "AWS_SECRET_ACCESS_KEY": "dataset-secret",
    "AWS_ENDPOINT_URL_S3": "http://a:8333",
    "AWS_REGION": "eu-west-1",
}


def _role(role: StorageRole, values: dict[str, str]) -> dict[str, str]:
    return {contract.role_variable(role, key): value for key, value in values.items()}


def test_one_secret_serves_every_role() -> None:
    for role in StorageRole:
        assert storage.credentials(role, PLAIN) == PLAIN


def test_a_role_with_variables_of_its_own_uses_them_alone() -> None:
    output = {"AWS_ACCESS_KEY_ID": "output-key", "AWS_SECRET_ACCESS_KEY": "output-secret"}
    env = {**PLAIN, "AWS_SESSION_TOKEN": "t", **_role(StorageRole.OUTPUT, output)}
    # Secret B has no endpoint or region: it is a whole identity, not mixed with Secret A's.
    assert storage.credentials(StorageRole.OUTPUT, env) == output
    assert storage.credentials(StorageRole.DATASET, env) == {**PLAIN, "AWS_SESSION_TOKEN": "t"}
    assert storage.credentials(StorageRole.WEIGHTS, env) == {**PLAIN, "AWS_SESSION_TOKEN": "t"}


def test_no_variables_leave_botocore_to_find_credentials() -> None:
    assert storage.credentials(StorageRole.OUTPUT, {}) == {}
    # An optional key absent from its Secret is an empty or missing variable: not a value.
    assert storage.credentials(StorageRole.DATASET, {"AWS_REGION": ""}) == {}
