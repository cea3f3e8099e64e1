"""Pure renderers: a TrainingPlan and its ModelVersion in, plain manifest dicts out.

No client objects, no clock, no randomness: the same inputs give the same bytes, which the
golden-file tests pin. Handlers adopt and create what these functions return.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import Any, Final

from kubevision_api import contract
from kubevision_api.contract import StorageRole
from kubevision_api.meta import API_VERSION
from kubevision_api.modelversion import ModelVersion, ModelVersionSpec
from kubevision_api.plan import TrainingPlan
from kubevision_operator import gang, naming
from kubevision_operator.jobstate import job_finished
from kubevision_operator.settings import OperatorSettings

TOKEN_EXPIRATION_SECONDS: Final = 3600


def owner_reference(mv: ModelVersion) -> dict[str, Any]:
    """The controller owner reference to ``mv``: deleting it deletes the child (garbage
    collector), and foreground deletion waits for the child.

    Raises:
        ValueError: ``mv`` has no ``metadata.uid`` (it was never stored by the API server).
    """
    if not mv.metadata.uid:
        raise ValueError(
            f"ModelVersion {mv.metadata.namespace}/{mv.metadata.name} has no metadata.uid; "
            "owner references need the stored object"
        )
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelVersion",
        "name": mv.metadata.name,
        "uid": mv.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(name: str, plan: TrainingPlan, mv: ModelVersion) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": mv.metadata.namespace,
        "labels": naming.labels(mv, plan.model),
        "ownerReferences": [owner_reference(mv)],
    }


def plan_json(plan: TrainingPlan) -> str:
    """The plan as the trainer reads it: camelCase, ``None`` left out, sorted keys (stable
    bytes for an unchanged plan)."""
    return json.dumps(plan.wire(), indent=2, sort_keys=True) + "\n"


def render_configmap(plan: TrainingPlan, mv: ModelVersion) -> dict[str, Any]:
    """The ConfigMap ``kv-<name>-plan`` holding ``plan.json``. The status endpoint's URL and
    CA travel inside the plan (``statusEndpoint.caPem``): the trainer reads the plan and
    nothing else. Immutable, as the ModelVersion's spec is: the kubelet then stops watching
    it, which matters with hundreds of trainings.

    Raises:
        ValueError: ``mv`` has no uid.
    """
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(naming.configmap_name(mv.metadata.name), plan, mv),
        "immutable": True,
        "data": {contract.PLAN_FILE: plan_json(plan)},
    }


@dataclass(frozen=True)
class Credentials:
    """Which Secret provides which role's storage credentials."""

    dataset: str | None
    output: str | None
    weights: str | None


def credentials(plan: TrainingPlan, settings: OperatorSettings) -> Credentials:
    """The credentials Secret of each storage role. The operator's output Secret belongs to
    the operator's default output location, so it applies only when ``spec.output.uri`` is
    unset too."""
    spec = plan.spec
    output = spec.output.credentials_secret_ref
    weights = spec.pretrained_weights.credentials_secret_ref if spec.pretrained_weights else None
    dataset = plan.dataset.credentials_secret_ref
    default_output = settings.output_credentials_secret if spec.output.uri is None else None
    return Credentials(
        dataset=dataset.name if dataset else None,
        output=output.name if output else default_output,
        weights=weights.name if weights else None,
    )


def credential_env(creds: Credentials) -> list[dict[str, Any]]:
    """AWS_* variables from the Secrets of ``creds``.

    The plain ``AWS_*`` names come from the first Secret named among dataset, output and
    weights, so a training with one Secret (the common case) works with any S3 client. Each
    other role whose Secret differs gets the same keys under ``KUBEVISION_<ROLE>_`` (OUTPUT,
    WEIGHTS); the trainer uses them for URIs of that role and falls back to the plain ones.
    """
    roles = [
        (StorageRole.DATASET, creds.dataset),
        (StorageRole.OUTPUT, creds.output),
        (StorageRole.WEIGHTS, creds.weights),
    ]
    named = [(role, secret) for role, secret in roles if secret]
    if not named:
        return []
    default = named[0][1]
    env = _secret_env(None, default)
    for role, secret in named[1:]:
        if secret != default:
            env += _secret_env(role, secret)
    return env


def _secret_env(role: StorageRole | None, secret: str) -> list[dict[str, Any]]:
    return [
        {
            "name": key if role is None else contract.role_variable(role, key),
            "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": optional}},
        }
        for key, optional in contract.AWS_KEYS
    ]


def _resources(spec: ModelVersionSpec, settings: OperatorSettings) -> dict[str, Any]:
    # Requests equal limits: a training is a batch workload that should not be throttled or
    # evicted before best-effort Pods (Guaranteed QoS), and extended resources require it.
    amounts: dict[str, Any] = {"cpu": spec.resources.cpu, "memory": spec.resources.memory}
    if spec.resources.gpus > 0:
        amounts[settings.gpu_resource_name] = str(spec.resources.gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _volumes(
    plan: TrainingPlan, mv: ModelVersion, settings: OperatorSettings
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    cache: dict[str, Any] = {}
    if settings.cache_size_limit:
        cache["sizeLimit"] = settings.cache_size_limit
    volumes: list[dict[str, Any]] = [
        {"name": "plan", "configMap": {"name": naming.configmap_name(mv.metadata.name)}},
        {"name": "cache", "emptyDir": cache},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size_limit}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "plan", "mountPath": contract.PLAN_DIR, "readOnly": True},
        {"name": "cache", "mountPath": contract.CACHE_DIR},
        {"name": "dshm", "mountPath": "/dev/shm"},
        # The root filesystem is read-only; libraries that need scratch space get /tmp.
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    endpoint = plan.status_endpoint
    if endpoint is not None:
        # Only a reporting trainer gets a token, bound to its Pod and to our audience: the
        # status endpoint's TokenReview accepts nothing else, and the API server rejects it.
        folder, file = posixpath.split(endpoint.token_path)
        volumes.append(
            {
                "name": "kubevision-token",
                "projected": {
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "audience": endpoint.audience,
                                "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
                                "path": file,
                            }
                        }
                    ]
                },
            }
        )
        mounts.append({"name": "kubevision-token", "mountPath": folder, "readOnly": True})
    return volumes, mounts


def command(settings: OperatorSettings) -> list[str]:
    """The trainer container's command: the override from the settings, or the trainer."""
    if settings.trainer_command_override:
        return list(settings.trainer_command_override)
    return contract.trainer_command()


def pod_failure_policy() -> dict[str, Any]:
    """Disruptions (preemption, node drain, eviction: the DisruptionTarget condition) are not
    failures and do not use up backoffLimit; an outcome that no retry can mend (bad input:
    a retry would read the same input; ``contract.no_retry_exit_codes``) fails the Job at once;
    any other failure counts against backoffLimit."""
    return {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": contract.CONTAINER,
                    "operator": "In",
                    "values": contract.no_retry_exit_codes(),
                },
            },
        ]
    }


def creation_suspend(spec: ModelVersionSpec) -> bool:
    """``.spec.suspend`` of a new Job. With ``runPolicy.queueName``, always True: Kueue
    admits the Job by unsuspending it. Otherwise the user's ``runPolicy.suspend``. (The
    operator's own concurrency limit creates no Job until it admits the training.)"""
    if spec.run_policy.queue_name:
        return True
    return spec.run_policy.suspend


def _pod_metadata(
    plan: TrainingPlan, mv: ModelVersion, settings: OperatorSettings
) -> dict[str, Any]:
    """The trainer Pods' labels (the settings' first, kubevision's own win) and annotations:
    by default they opt out of service-mesh sidecar injection."""
    metadata: dict[str, Any] = {
        "labels": {**settings.trainer_pod_labels, **naming.labels(mv, plan.model)}
    }
    if settings.trainer_pod_annotations:
        metadata["annotations"] = dict(sorted(settings.trainer_pod_annotations.items()))
    return metadata


def render_service(plan: TrainingPlan, mv: ModelVersion) -> dict[str, Any]:
    """The headless Service of a multi-Pod training (``spec.resources.nodes > 1``), named after
    its Job and owned by ``mv`` as the ConfigMap is: the Pods' subdomain, so that each Pod
    resolves the Pod of index 0 (``gang.master_address``). It outlives each attempt's Job.

    Raises:
        ValueError: ``mv`` has no uid.
    """
    name = naming.service_name(mv.metadata.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, plan, mv),
        "spec": gang.service_spec(naming.job_name(mv.metadata.name)),
    }


def render_job(
    plan: TrainingPlan,
    mv: ModelVersion,
    settings: OperatorSettings,
    *,
    suspend: bool,
    attempt: int = 1,
) -> dict[str, Any]:
    """The training Job ``kv-<name>`` (batch/v1), owned by ``mv``: one Pod, or for
    ``spec.resources.nodes > 1`` an Indexed Job of that many Pods (``gang``).

    ``suspend`` is the Job's initial ``.spec.suspend`` (see :func:`creation_suspend`); with a
    Kueue queue the Job is created suspended whatever ``suspend`` says, since an unsuspended
    Job would run before Kueue admits it. ``attempt`` is the gang attempt of a multi-Pod Job
    (its annotation and ``KUBEVISION_ATTEMPT``); a one-Pod Job retries by itself.

    Raises:
        ValueError: ``mv`` has no uid.
    """
    spec = mv.spec
    policy = spec.run_policy
    name = naming.job_name(mv.metadata.name)
    metadata = _metadata(name, plan, mv)
    if gang.is_gang(spec):
        metadata["annotations"] = {naming.ATTEMPT_ANNOTATION: str(attempt)}
    if policy.queue_name:
        metadata["labels"][naming.KUEUE_QUEUE_LABEL] = policy.queue_name
        suspend = True
    volumes, mounts = _volumes(plan, mv, settings)
    env: list[dict[str, Any]] = [{"name": contract.ENV_CACHE_DIR, "value": contract.CACHE_DIR}]
    if plan.status_endpoint is not None:
        # Also in the plan; as a variable, whatever runs the container can remap the path.
        env.append(
            {
                "name": contract.ENV_STATUS_TOKEN_PATH,
                "value": plan.status_endpoint.token_path,
            }
        )
    env += credential_env(credentials(plan, settings))
    env += gang.world_env(spec, name, mv.metadata.namespace, attempt)
    container: dict[str, Any] = {
        "name": contract.CONTAINER,
        "image": spec.image or settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": command(settings),
        "env": env,
        "resources": _resources(spec, settings),
        "volumeMounts": mounts,
        "terminationMessagePath": contract.TERMINATION_LOG,
        # The trainer writes one line there; a crash before it can (import error, segfault)
        # still leaves the tail of its log for the Failed condition.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
    }
    ports = gang.container_ports(spec)
    if plan.metrics_port:
        ports.append({"name": "metrics", "containerPort": plan.metrics_port, "protocol": "TCP"})
    if ports:
        container["ports"] = ports
    uid = settings.trainer_run_as_user
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # Trainer Pods need no RBAC: the only token they hold is the projected one above.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": settings.termination_grace_period_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(sorted(spec.node_selector.items()))
    if spec.tolerations:
        pod_spec["tolerations"] = [t.wire() for t in spec.tolerations]
    if spec.priority_class_name:
        pod_spec["priorityClassName"] = spec.priority_class_name
    if gang.is_gang(spec):
        # Kubernetes names an Indexed Job's Pods <job>-<index>; with the Service as their
        # subdomain, each resolves as <job>-<index>.<service>.<namespace>.svc.
        pod_spec["subdomain"] = naming.service_name(mv.metadata.name)
    job_spec: dict[str, Any] = {
        "suspend": suspend,
        **gang.job_spec_fields(spec),
        "podFailurePolicy": pod_failure_policy(),
        # A replacement Pod starts only once the old one has terminated: the old one writes
        # last.pt on SIGTERM, and the new one resumes from it.
        "podReplacementPolicy": "Failed",
        "template": {
            "metadata": _pod_metadata(plan, mv, settings),
            "spec": pod_spec,
        },
    }
    if policy.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = policy.active_deadline_seconds
    ttl = policy.ttl_seconds_after_finished
    if ttl is None:
        ttl = settings.default_ttl_seconds_after_finished
    if ttl is not None:
        job_spec["ttlSecondsAfterFinished"] = ttl
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def job_patch(job: dict[str, Any], mv: ModelVersion) -> dict[str, Any] | None:
    """The merge patch of the existing ``job`` that the ModelVersion's mutable fields ask for
    (``runPolicy.suspend``, ``runPolicy.activeDeadlineSeconds``), or None when it is up to
    date or finished (:func:`jobstate.job_finished`: its outcome is decided).

    The rule for ``.spec.suspend``: with a Kueue queue the operator sets it only for the
    user's ``suspend: true`` and never clears it (Kueue owns admission); without one it
    follows ``runPolicy.suspend``.
    """
    if job_finished(job):
        return None
    current = job.get("spec", {})
    policy = mv.spec.run_policy
    patch: dict[str, Any] = {}
    is_suspended = bool(current.get("suspend", False))
    if policy.queue_name:
        if policy.suspend and not is_suspended:
            patch["suspend"] = True
    elif is_suspended != policy.suspend:
        patch["suspend"] = policy.suspend
    if current.get("activeDeadlineSeconds") != policy.active_deadline_seconds:
        # None clears the field in a merge patch.
        patch["activeDeadlineSeconds"] = policy.active_deadline_seconds
    return {"spec": patch} if patch else None


def render_event(
    obj: dict[str, Any], event_type: str, reason: str, message: str, now: str
) -> dict[str, Any]:
    """A core/v1 Event about ``obj`` (``now``: RFC 3339 time)."""
    meta = obj["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": event_type,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "kubevision-operator"},
        "reportingComponent": "kubevision.dev/operator",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
