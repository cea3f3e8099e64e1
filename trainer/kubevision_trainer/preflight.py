"""The storage pre-flight: before LoadingDataset reads a single image, each storage role is
tried with its own credentials, so that a wrong endpoint, a missing bucket or a read-only
identity fails the run within seconds, naming the URI, the endpoint and the Secret, instead of
after the whole dataset was read and decoded.

- output: its bucket must exist (kubevision never creates one), and an object is written under
  the output URI and deleted again (the trainer must be able to write there); incomplete
  uploads that a killed trainer left there are aborted;
- dataset: the annotation file is looked up, or the ImageFolder root listed;
- weights: the initial weights' object is looked up.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from kubevision_api.contract import StorageRole
from kubevision_api.errors import InputError
from kubevision_api.plan import TrainingPlan
from kubevision_api.view import DatasetFormat
from kubevision_trainer import storage, upload

log = logging.getLogger(__name__)

#: Name of the object written and deleted under the output URI.
PROBE = ".kubevision-preflight-{token}"


class PreflightError(storage.StorageError):
    """A storage role cannot do what the run needs of it. The message names the role, what it
    had to do, the Secret (when the role uses one), the URI, the store's error code and the
    endpoint."""


def check(plan: TrainingPlan) -> None:
    """Try every storage role the plan uses.

    Raises:
        PreflightError: a role's store refused or failed (no retry can mend the configuration).
        InputError: the dataset or the initial weights do not exist (names the URI).
    """
    secrets = plan.storage_secrets
    probe = storage.join(plan.output_uri, PROBE.format(token=uuid.uuid4().hex[:12]))

    def write_probe() -> None:
        storage.require_bucket(plan.output_uri, role=StorageRole.OUTPUT)
        storage.write_atomic(probe, b"kubevision pre-flight\n")
        storage.remove(probe, role=StorageRole.OUTPUT)

    _attempt(StorageRole.OUTPUT, secrets.output, f"write under {plan.output_uri}", write_probe)
    try:
        swept = upload.abort_incomplete(plan.output_uri)
    except storage.STORE_ERRORS as exc:
        # Best effort: an identity may write without being allowed to list uploads.
        log.warning("could not sweep incomplete uploads under %s: %s", plan.output_uri, exc)
    else:
        if swept:
            log.info("aborted %d incomplete upload(s) under %s", swept, plan.output_uri)

    dataset = plan.dataset
    if dataset.format is DatasetFormat.IMAGEFOLDER:
        _attempt(
            StorageRole.DATASET,
            secrets.dataset,
            "list the dataset",
            lambda: storage.list_dir(dataset.uri, role=StorageRole.DATASET),
        )
    else:
        _require(dataset.uri, StorageRole.DATASET, secrets.dataset, "read the dataset")
    weights = plan.spec.pretrained_weights
    if weights is not None:
        _require(weights.uri, StorageRole.WEIGHTS, secrets.weights, "read the initial weights")


def _attempt(
    role: StorageRole, secret: str | None, action: str, call: Callable[[], object]
) -> None:
    try:
        call()
    except storage.StorageError as exc:
        named = f" with Secret {secret!r}" if secret else ""
        context = f"{role.value.lower()} storage cannot {action}{named}: "
        cause = exc.__cause__ or exc
        raise PreflightError(exc.uri, exc.role, cause, context=context, code=exc.code) from exc


def _require(uri: str, role: StorageRole, secret: str | None, action: str) -> None:
    found: list[bool] = []
    _attempt(role, secret, action, lambda: found.append(storage.exists(uri, role=role)))
    if not found[0]:
        raise InputError(uri, "file not found")
