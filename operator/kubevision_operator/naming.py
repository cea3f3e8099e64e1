"""Names and labels of the objects made for a ModelVersion: deterministic, derived from the
ModelVersion alone, so a restarted operator finds (and adopts) what it made before."""

from __future__ import annotations

import hashlib
import re
from typing import Final

from kubevision_api.modelversion import ModelVersion

MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE: Final = "kubevision"
COMPONENT: Final = "app.kubernetes.io/component"
VIEW_LABEL: Final = "kubevision.dev/view"
MODEL_LABEL: Final = "kubevision.dev/model"
MODELVERSION_LABEL: Final = "kubevision.dev/modelversion"
KUEUE_QUEUE_LABEL: Final = "kueue.x-k8s.io/queue-name"
#: The gang attempt (1, 2, ...) of a multi-Pod Job, on the Job: the operator recreates the Job
#: for each attempt, and the Job, its annotation and the status are all it needs to know
#: where a restart stands (docs/operator.md, Gang restart).
ATTEMPT_ANNOTATION: Final = "kubevision.dev/attempt"
#: Set by the Job controller on the Pods of an Indexed Job: the Pod's completion index.
COMPLETION_INDEX_ANNOTATION: Final = "batch.kubernetes.io/job-completion-index"
#: Set by the Job controller on its Pods: the Job's name.
JOB_NAME_LABEL: Final = "batch.kubernetes.io/job-name"

#: A label value (and a Job name, which the Job controller copies into its Pods' labels):
#: at most 63 characters.
MAX_LABEL: Final = 63
_HASH_CHARS: Final = 8
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_CHARS]


def job_name(modelversion: str) -> str:
    """``kv-<name>``; when that exceeds 63 characters, cut and suffixed with 8 hex digits of
    sha256 of the full name, so two long names sharing a prefix still differ. Always a DNS
    label (the name is one, by the CRD's rule).

    Raises:
        ValueError: ``modelversion`` is not a DNS label.
    """
    if not _DNS_LABEL.match(modelversion) or len(modelversion) > MAX_LABEL:
        raise ValueError(f"ModelVersion name {modelversion!r} is not a DNS label")
    name = f"kv-{modelversion}"
    if len(name) <= MAX_LABEL:
        return name
    head = name[: MAX_LABEL - _HASH_CHARS - 1].rstrip("-")
    return f"{head}-{_digest(modelversion)}"


def service_name(modelversion: str) -> str:
    """The headless Service of a multi-Pod training: named after its Job (a DNS label that
    starts with a letter, as a Service name must)."""
    return job_name(modelversion)


def configmap_name(modelversion: str) -> str:
    """``kv-<name>-plan``: at most 71 characters, within a ConfigMap's 253 (never a label)."""
    return f"kv-{modelversion}-plan"


def label_value(text: str) -> str:
    """``text`` as a valid label value: kept as is when already valid, otherwise characters
    outside ``[A-Za-z0-9-_.]`` become ``-``, the ends are trimmed to alphanumerics and, when
    anything changed or it was too long, 8 hex digits of sha256 of the original follow, so
    two different inputs never share a value by accident."""
    if len(text) <= MAX_LABEL and _LABEL_VALUE.match(text):
        return text
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", text)
    cleaned = cleaned[: MAX_LABEL - _HASH_CHARS - 1]
    cleaned = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)
    suffix = _digest(text)
    return f"{cleaned}-{suffix}" if cleaned else suffix


def labels(mv: ModelVersion, model: str) -> dict[str, str]:
    """Labels of every object made for ``mv``; ``model`` is the model id of the plan."""
    return {
        MANAGED_BY: MANAGED_BY_VALUE,
        COMPONENT: "trainer",
        VIEW_LABEL: label_value(mv.spec.view_ref.name),
        MODEL_LABEL: label_value(model),
        MODELVERSION_LABEL: label_value(mv.metadata.name),
    }


def selector(mv: ModelVersion) -> str:
    """Label selector of the objects made for ``mv`` (``kubectl get -l``)."""
    return f"{MANAGED_BY}={MANAGED_BY_VALUE},{MODELVERSION_LABEL}={label_value(mv.metadata.name)}"
