"""The operator and trainer Dockerfiles, tested from the files (no image can be built here):
pinned base images (CUDA for the trainer), a non-root USER that matches what the chart and
the operator run them as, entrypoints equal to the commands the chart and the operator
render, and COPY sources that exist, among them every folder the distribution's packages
live in."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from kubevision_api import contract
from kubevision_operator import render
from kubevision_operator.settings import OperatorSettings
from tests.helm.helm_tool import CHART

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {
    "operator": ROOT / "operator" / "Dockerfile",
    "trainer": ROOT / "trainer" / "Dockerfile",
}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def args(path: Path) -> dict[str, str]:
    return dict(
        rest.split("=", 1) for word, rest in instructions(path) if word == "ARG" and "=" in rest
    )


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last:]


def exec_form(path: Path, word: str) -> list[str]:
    (value,) = [rest for w, rest in final_stage(path) if w == word]
    parsed: list[str] = json.loads(value)
    return parsed


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_base_images_are_pinned(name: str) -> None:
    path = DOCKERFILES[name]
    defaults = args(path)
    for word, rest in instructions(path):
        if word != "FROM":
            continue
        image = rest.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], image)
        _, _, tag = image.partition(":")
        assert tag, f"{name}: {image} has no tag"
        assert "latest" not in tag and re.search(r"\d+\.\d+\.\d+", tag), f"{name}: {image}"


def test_trainer_has_a_cuda_base() -> None:
    assert args(DOCKERFILES["trainer"])["CUDA_IMAGE"].startswith("nvidia/cuda:")


def user(name: str) -> int:
    (value,) = [rest for word, rest in final_stage(DOCKERFILES[name]) if word == "USER"]
    uid, _, gid = value.partition(":")
    assert uid.isdigit() and (not gid or gid == uid), value
    return int(uid)


def test_non_root_users_match_the_chart_and_the_operator() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert user("operator") == values["operator"]["runAsUser"] != 0
    assert user("trainer") == values["trainer"]["runAsUser"] != 0
    assert user("trainer") == OperatorSettings.model_fields["trainer_run_as_user"].default


def test_entrypoints_match_the_rendered_commands() -> None:
    operator = DOCKERFILES["operator"]
    assert exec_form(operator, "ENTRYPOINT") + exec_form(operator, "CMD") == [
        "kubevision",
        "operator",
    ]
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    assert 'command: ["kubevision", "operator"]' in deployment
    trainer = DOCKERFILES["trainer"]
    settings = OperatorSettings()
    assert exec_form(trainer, "ENTRYPOINT") + exec_form(trainer, "CMD") == render.command(settings)
    assert contract.PLAN_PATH in exec_form(trainer, "CMD")


def test_trainer_image_serves_the_metrics_port() -> None:
    exposed = [rest for word, rest in final_stage(DOCKERFILES["trainer"]) if word == "EXPOSE"]
    assert exposed == [str(OperatorSettings.model_fields["trainer_metrics_port"].default)]


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_copy_sources_exist(name: str) -> None:
    for word, rest in instructions(DOCKERFILES[name]):
        if word == "COPY" and not rest.startswith("--from"):
            *sources, _ = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), f"{name}: COPY {source}"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_images_copy_every_package_folder(name: str) -> None:
    """``pip install .`` in the image finds only the package folders it was given: a folder
    missing here (``cli/``, home of the ``kubevision`` command) builds an image whose
    entrypoint fails to import."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # "." holds testenv alone: the tests' environment, which no image ships.
    folders = set(pyproject["tool"]["setuptools"]["packages"]["find"]["where"]) - {"."}
    copied = {
        rest.split()[0].rstrip("/")
        for word, rest in instructions(DOCKERFILES[name])
        if word == "COPY" and not rest.startswith("--from")
    }
    assert "cli" in folders
    assert folders <= copied, f"{name}: COPY {sorted(folders - copied)}"
