"""The pure renderers: golden files for four ModelVersions, and the rules behind them."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubevision_api.plan import TrainingPlan
from kubevision_operator import naming, render
from tests.operator.operator_helpers import (
    modelversion,
    plan_for,
    settings,
    view,
)

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("KUBEVISION_UPDATE_GOLDEN") == "1"
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (plan.json) as literal blocks, so a golden diff reads line by line."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _case(name: str) -> tuple[dict[str, Any], ...]:
    attempt = 1
    if name == "classification-defaults":
        v, mv = view(), modelversion()
        cfg = settings()
        suspend = False
    elif name == "detection-gpu":
        v = view(
            task="detection",
            concepts=("car", "person"),
            dataset={
                "uri": "s3://data/street/annotations.json",
                "format": "coco",
                "credentialsSecretRef": {"name": "street-data"},
            },
            name="street",
        )
        mv = modelversion(
            name="street-frcnn",
            view_name="street",
            architecture="fasterrcnn_resnet50_fpn",
            resources={"gpus": 1, "cpu": "8", "memory": "32Gi"},
            nodeSelector={"node.kubernetes.io/instance-type": "g5.xlarge", "gpu": "a10g"},
            tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            priorityClassName="training-high",
            image="registry.example/kubevision/trainer:0.1.0-cuda",
            output={"credentialsSecretRef": {"name": "models-writer"}},
            runPolicy={"backoffLimit": 4, "activeDeadlineSeconds": 86400},
        )
        cfg = settings(pushgateway_url="http://pushgateway.monitoring:9091")
        suspend = False
    elif name == "suspended":
        v, mv = view(), modelversion(name="pets-v2", runPolicy={"suspend": True})
        cfg = settings(
            default_ttl_seconds_after_finished=604800,
            output_credentials_secret="kv-output",
            cache_size_limit="20Gi",
        )
        suspend = render.creation_suspend(mv.spec)
    elif name == "kueue":
        v = view()
        mv = modelversion(name="pets-v3", runPolicy={"queueName": "team-a-gpu"})
        cfg = settings(status_url=None, trainer_metrics_port=0)
        # The caller's value does not matter: a Kueue Job is always created suspended.
        suspend = False
    elif name == "gang-2x1-cpu":
        # Two Pods of one CPU process each, in the middle of a gang restart (attempt 2).
        v = view()
        mv = modelversion(
            name="pets-ddp",
            resources={"gpus": 0, "nodes": 2, "cpu": "2", "memory": "4Gi"},
            training={"batchSize": 32},
        )
        cfg = settings()
        suspend, attempt = False, 2
    elif name == "single-1x2-cpu":
        # One Pod, two processes: today's Job, plus torchrun's world size.
        v = view()
        mv = modelversion(
            name="pets-2proc",
            resources={"gpus": 0, "processesPerNode": 2, "cpu": "2", "memory": "4Gi"},
        )
        cfg = settings()
        suspend = False
    elif name == "gang-2x8-gpu":
        # Two nodes of 8 GPUs each, admitted by Kueue as one workload.
        v = view()
        mv = modelversion(
            name="pets-16gpu",
            resources={"gpus": 8, "nodes": 2, "cpu": "64", "memory": "512Gi"},
            training={"batchSize": 256},
            runPolicy={"queueName": "team-a-gpu", "backoffLimit": 3},
        )
        cfg = settings()
        suspend = False
    else:
        raise AssertionError(name)
    plan = plan_for(v, mv, cfg)
    objects = [
        render.render_configmap(plan, mv),
        render.render_job(plan, mv, cfg, suspend=suspend, attempt=attempt),
    ]
    if mv.spec.resources.nodes > 1:
        objects.append(render.render_service(plan, mv))
    return tuple(objects)


CASES = [
    "classification-defaults",
    "detection-gpu",
    "suspended",
    "kueue",
    "gang-2x1-cpu",
    "single-1x2-cpu",
    "gang-2x8-gpu",
]


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    objects = list(_case(case))
    text = yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, width=100)
    assert list(yaml.safe_load_all(text)) == objects
    path = GOLDEN / f"{case}.yaml"
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"{path} is missing; run with KUBEVISION_UPDATE_GOLDEN=1"
    assert text == path.read_text(), (
        f"{case} renders differently from {path}; if intended, rerun with "
        "KUBEVISION_UPDATE_GOLDEN=1 and review the diff"
    )


def test_golden_folder_holds_exactly_the_cases() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.yaml")) == sorted(CASES)


@pytest.mark.parametrize("case", CASES)
def test_rendering_twice_gives_the_same_bytes(case: str) -> None:
    assert _case(case) == _case(case)


@pytest.mark.parametrize("case", CASES)
def test_invariants(case: str) -> None:
    configmap, job, *rest = _case(case)
    for obj in (configmap, job, *rest):
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner["controller"] is True and owner["blockOwnerDeletion"] is True
        assert owner["kind"] == "ModelVersion" and owner["uid"]
        labels = obj["metadata"]["labels"]
        assert labels[naming.MANAGED_BY] == "kubevision"
        for key in (naming.VIEW_LABEL, naming.MODEL_LABEL, naming.MODELVERSION_LABEL):
            assert LABEL_VALUE.match(labels[key]) and len(labels[key]) <= 63
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/etc/kubevision"] == "plan" and mounts["/dev/shm"] == "dshm"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert volumes["plan"]["configMap"]["name"] == configmap["metadata"]["name"]
    assert job["spec"]["podReplacementPolicy"] == "Failed"
    # The Pods carry the Job's labels (not Kueue's) and, by default, opt out of sidecars.
    assert job["spec"]["template"]["metadata"]["labels"] == {
        "sidecar.istio.io/inject": "false",
        **{k: v for k, v in job["metadata"]["labels"].items() if k != naming.KUEUE_QUEUE_LABEL},
    }
    assert job["spec"]["template"]["metadata"]["annotations"] == {"linkerd.io/inject": "disabled"}
    # The API server's rule: a pod failure policy needs restartPolicy Never.
    assert job["spec"]["podFailurePolicy"]["rules"]


def test_plan_json_round_trips_with_the_ca() -> None:
    v, mv = view(), modelversion()
    plan = plan_for(v, mv)
    data = render.render_configmap(plan, mv)["data"]
    assert list(data) == ["plan.json"]
    back = TrainingPlan.model_validate_json(data["plan.json"])
    assert back == plan
    assert back.status_endpoint is not None and back.status_endpoint.ca_pem
    assert '"modelVersion": "pets-v1"' in data["plan.json"]  # camelCase on the wire


def test_a_modelversion_without_uid_cannot_own_children() -> None:
    v, mv = view(), modelversion(uid=None)
    with pytest.raises(ValueError, match=r"team-a/pets-v1 has no metadata\.uid"):
        render.render_configmap(plan_for(v, mv), mv)


def _container(job: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = job["spec"]["template"]["spec"]["containers"][0]
    return container


def test_gpu_resource_name_comes_from_the_settings() -> None:
    v, mv = view(), modelversion(resources={"gpus": 1})
    cfg = settings(gpu_resource_name="amd.com/gpu")
    resources = _container(render.render_job(plan_for(v, mv, cfg), mv, cfg, suspend=False))[
        "resources"
    ]
    assert resources["limits"]["amd.com/gpu"] == "1"
    assert resources["requests"] == resources["limits"]
    assert "nvidia.com/gpu" not in resources["limits"]


def test_no_gpu_means_no_gpu_resource() -> None:
    v, mv = view(), modelversion(resources={"gpus": 0, "cpu": "2", "memory": "4Gi"})
    cfg = settings()
    limits = _container(render.render_job(plan_for(v, mv, cfg), mv, cfg, suspend=False))[
        "resources"
    ]["limits"]
    assert limits == {"cpu": "2", "memory": "4Gi"}


def test_command_override_replaces_the_trainer() -> None:
    v, mv = view(), modelversion()
    cfg = settings(trainer_command_override=["python", "-m", "stub", "--plan-dir", "/x"])
    job = render.render_job(plan_for(v, mv, cfg), mv, cfg, suspend=False)
    assert _container(job)["command"] == ["python", "-m", "stub", "--plan-dir", "/x"]
    assert render.command(settings()) == [
        "kubevision",
        "trainer",
        "--plan",
        "/etc/kubevision/plan.json",
        "--termination-log",
        "/dev/termination-log",
    ]


def test_without_status_endpoint_no_token_is_mounted() -> None:
    v, mv = view(), modelversion()
    cfg = settings(status_url=None)
    job = render.render_job(plan_for(v, mv, cfg), mv, cfg, suspend=False)
    names = [vol["name"] for vol in job["spec"]["template"]["spec"]["volumes"]]
    assert "kubevision-token" not in names


def test_token_is_bound_to_the_audience_and_expires() -> None:
    v, mv = view(), modelversion()
    cfg = settings()
    job = render.render_job(plan_for(v, mv, cfg), mv, cfg, suspend=False)
    volumes = {vol["name"]: vol for vol in job["spec"]["template"]["spec"]["volumes"]}
    (source,) = volumes["kubevision-token"]["projected"]["sources"]
    assert source["serviceAccountToken"] == {
        "audience": "kubevision.dev",
        "expirationSeconds": 3600,
        "path": "token",
    }
    mounts = {m["name"]: m["mountPath"] for m in _container(job)["volumeMounts"]}
    assert mounts["kubevision-token"] == "/var/run/secrets/kubevision.dev"


def _env_names(env: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in env}


@pytest.mark.parametrize(
    ("dataset", "output", "weights", "expected"),
    [
        (None, None, None, {}),
        ("d", None, None, {"AWS_ACCESS_KEY_ID": "d"}),
        (None, "o", None, {"AWS_ACCESS_KEY_ID": "o"}),
        ("s", "s", None, {"AWS_ACCESS_KEY_ID": "s"}),
        (
            "d",
            "o",
            None,
            {"AWS_ACCESS_KEY_ID": "d", "KUBEVISION_OUTPUT_AWS_ACCESS_KEY_ID": "o"},
        ),
        (
            "d",
            "o",
            "w",
            {
                "AWS_ACCESS_KEY_ID": "d",
                "KUBEVISION_OUTPUT_AWS_ACCESS_KEY_ID": "o",
                "KUBEVISION_WEIGHTS_AWS_ACCESS_KEY_ID": "w",
            },
        ),
        (None, "o", "o", {"AWS_ACCESS_KEY_ID": "o"}),
        (None, None, "w", {"AWS_ACCESS_KEY_ID": "w"}),
    ],
)
def test_credentials_env(
    dataset: str | None, output: str | None, weights: str | None, expected: dict[str, str]
) -> None:
    env = render.credential_env(render.Credentials(dataset, output, weights))
    names = _env_names(env)
    assert {k: v for k, v in names.items() if k.endswith("AWS_ACCESS_KEY_ID")} == expected
    # Four keys per Secret; only the endpoint and region may be absent from it.
    assert len(env) == 4 * len(expected)
    for item in env:
        ref = item["valueFrom"]["secretKeyRef"]
        assert ref["optional"] is (ref["key"] in ("AWS_ENDPOINT_URL_S3", "AWS_REGION"))


def test_operator_output_secret_only_for_the_default_output() -> None:
    cfg = settings(output_credentials_secret="kv-output")
    v = view()
    assert render.credentials(plan_for(v, modelversion(), cfg), cfg).output == "kv-output"
    own_uri = modelversion(output={"uri": "s3://mine/run/"})
    assert render.credentials(plan_for(v, own_uri, cfg), cfg).output is None
    own_secret = modelversion(output={"credentialsSecretRef": {"name": "mine"}})
    assert render.credentials(plan_for(v, own_secret, cfg), cfg).output == "mine"


def test_pod_failure_policy_ignores_disruptions_and_fails_on_bad_input() -> None:
    rules = render.pod_failure_policy()["rules"]
    assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    assert rules[1]["action"] == "FailJob"
    assert rules[1]["onExitCodes"] == {
        "containerName": "trainer",
        "operator": "In",
        "values": [2, 3, 4, 5],
    }
    assert len(rules) == 2  # everything else counts against backoffLimit (the default)


def test_metrics_port_is_named_and_optional() -> None:
    v, mv = view(), modelversion()
    job = render.render_job(plan_for(v, mv), mv, settings(), suspend=False)
    assert _container(job)["ports"] == [
        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}
    ]
    cfg = settings(trainer_metrics_port=0)
    job = render.render_job(plan_for(v, mv, cfg), mv, cfg, suspend=False)
    assert "ports" not in _container(job)


@pytest.mark.parametrize(
    ("run_policy", "expected"),
    [
        ({}, False),
        ({"suspend": True}, True),
        ({"queueName": "q"}, True),
        ({"queueName": "q", "suspend": False}, True),
    ],
)
def test_creation_suspend(run_policy: dict[str, Any], expected: bool) -> None:
    mv = modelversion(runPolicy=run_policy)
    assert render.creation_suspend(mv.spec) is expected


def _live(suspend: bool, deadline: int | None = None, done: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"suspend": suspend}
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    status = {"conditions": [{"type": done, "status": "True"}]} if done else {}
    return {"spec": spec, "status": status}


@pytest.mark.parametrize(
    ("run_policy", "job", "patch"),
    [
        # Without a queue, suspend follows the user's field.
        ({}, _live(False), None),
        ({"suspend": True}, _live(False), {"suspend": True}),
        ({}, _live(True), {"suspend": False}),
        ({"suspend": True}, _live(True), None),
        # With Kueue: only the user's suspend: true; never unsuspended by the operator.
        ({"queueName": "q"}, _live(True), None),
        ({"queueName": "q"}, _live(False), None),
        ({"queueName": "q", "suspend": True}, _live(False), {"suspend": True}),
        ({"queueName": "q", "suspend": False}, _live(True), None),
        # activeDeadlineSeconds is mutable and follows the spec, set or cleared.
        ({"activeDeadlineSeconds": 60}, _live(False), {"activeDeadlineSeconds": 60}),
        ({}, _live(False, deadline=60), {"activeDeadlineSeconds": None}),
        # A finished Job is left alone, from the moment its outcome is decided.
        ({"suspend": True}, _live(False, done="Complete"), None),
        ({"suspend": True}, _live(False, done="SuccessCriteriaMet"), None),
        ({"suspend": True}, _live(False, done="Failed"), None),
        ({"suspend": True}, _live(False, done="FailureTarget"), None),
    ],
)
def test_job_patch(
    run_policy: dict[str, Any], job: dict[str, Any], patch: dict[str, Any] | None
) -> None:
    got = render.job_patch(job, modelversion(runPolicy=run_policy))
    assert got == ({"spec": patch} if patch else None)
