"""``kubevision evaluate`` on the detection example, trained for 1 epoch on 60 of its canvases
with a test split (the example's ModelVersion otherwise): on the validation split it gives the
run's own ``evaluation.json`` byte for byte; on the test split, the run's ``test/`` files, apart
from the validation ones; a checkpoint of other concepts is one error naming file and field."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from kubevision_api.evaluation import Evaluation, EvaluationStatus
from kubevision_cli import main as cli
from kubevision_trainer import local
from kubevision_trainer import main as trainer_main
from kubevision_trainer.report.reporter import NullReporter

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
EXAMPLE = "03-detection-digits"
IMAGES = 60


class EvaluationCatcher(NullReporter):
    """Keeps what the run tells ``Reporter.evaluation``."""

    def __init__(self) -> None:
        self.status: EvaluationStatus | None = None
        self.evaluations: list[Evaluation] = []

    def evaluation(self, status: EvaluationStatus, evaluations: Sequence[Evaluation]) -> None:
        self.status, self.evaluations = status, list(evaluations)


def _train(work: Path, example: str, dataset: str, images: int, epochs: int = 1) -> dict[str, Any]:
    """``example``'s manifests in a copy of examples/ (``images`` images of ``dataset``,
    ``epochs`` epochs without warmup, test split 0.2, no DataLoader workers), trained on the
    CPU into ``out/``."""
    folder = work / "examples" / example
    shutil.copytree(ROOT / "examples" / example, folder)
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "prepare.py"),
            "--out",
            str(work / "examples" / "data"),
            "--only",
            dataset,
            "--limit",
            str(images),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    mv_path = folder / "modelversion.yaml"
    mv = yaml.safe_load(mv_path.read_text())
    mv["spec"]["datasetSplit"]["testFraction"] = 0.2
    mv["spec"]["training"]["dataLoaderWorkers"] = 0
    mv["spec"]["training"]["lrSchedule"]["warmupEpochs"] = 0
    mv_path.write_text(yaml.safe_dump(mv))
    out = work / "out"
    plan = local.plan_from_manifests([folder], output=str(out), epochs=epochs)
    catcher = EvaluationCatcher()
    trainer_main.run(plan, device="cpu", reporters=[catcher])
    return {"work": work, "folder": folder, "out": out, "catcher": catcher}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The detection example, trained on 60 canvases."""
    return _train(tmp_path_factory.mktemp("evaluate"), EXAMPLE, "digits-detection", IMAGES)


def _evaluate(trained: dict[str, Any], output: Path, *extra: str) -> int:
    return cli.main(
        [
            "evaluate",
            "-f",
            str(trained["folder"]),
            "--model",
            str(trained["out"] / "checkpoints" / "best.pt"),
            "--output",
            str(output),
            "--device",
            "cpu",
            *extra,
        ]
    )


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.getextrema() != ((0, 0), (0, 0), (0, 0))  # not one flat colour
        return image.size


def test_the_run_scores_the_test_split_apart(trained: dict[str, Any]) -> None:
    out: Path = trained["out"]
    status = trained["catcher"].status
    assert status is not None and status.test_artifacts is not None
    validation, test = trained["catcher"].evaluations
    assert (validation.split.value, test.split.value) == ("validation", "test")
    dataset = json.loads((out / "dataset.json").read_text())
    sides = [image["split"] for image in dataset["images"]]
    assert test.images == sides.count("test") > 0
    assert validation.images == sides.count("val") > 0
    assert status.test == test.summary and status.validation == validation.summary
    assert status.test_artifacts.evaluation == (out / "test" / "evaluation.json").as_uri()
    assert Evaluation.model_validate_json((out / "test" / "evaluation.json").read_text()) == test
    assert _png_size(out / "test" / "pr_curves.png")[0] > 100


def test_evaluate_reproduces_the_runs_validation_evaluation(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    assert _evaluate(trained, tmp_path / "again") == 0
    mine = (tmp_path / "again" / "evaluation.json").read_bytes()
    theirs = (trained["out"] / "evaluation.json").read_bytes()
    assert json.loads(mine) == json.loads(theirs)
    assert mine == theirs
    assert (tmp_path / "again" / "pr_curves.png").stat().st_size > 0
    assert not (tmp_path / "again" / "test").exists()


def test_evaluate_on_the_test_split_writes_its_own_figures(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    assert _evaluate(trained, tmp_path / "t", "--split", "test") == 0
    folder = tmp_path / "t" / "test"
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["test"]
    assert sorted(p.name for p in folder.iterdir()) == ["evaluation.json", "pr_curves.png"]
    assert (folder / "evaluation.json").read_bytes() == (
        trained["out"] / "test" / "evaluation.json"
    ).read_bytes()
    assert _png_size(folder / "pr_curves.png")[0] > 100


def test_evaluate_every_image(trained: dict[str, Any], tmp_path: Path) -> None:
    assert _evaluate(trained, tmp_path / "all", "--split", "all") == 0
    evaluation = json.loads((tmp_path / "all" / "evaluation.json").read_text())
    assert evaluation["split"] == "dataset"
    assert evaluation["images"] == evaluation["summary"]["images"] == IMAGES


def test_a_checkpoint_of_other_concepts_is_refused(
    trained: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "other"
    shutil.copytree(trained["folder"], folder)
    view = yaml.safe_load((folder / "view.yaml").read_text())
    view["spec"]["concepts"] = view["spec"]["concepts"][:2]
    view["spec"]["dataset"]["uri"] = str(
        trained["work"] / "examples" / "data" / "digits-detection" / "annotations.json"
    )
    (folder / "view.yaml").write_text(yaml.safe_dump(view))
    model = trained["out"] / "checkpoints" / "best.pt"
    code = cli.main(
        ["evaluate", "-f", str(folder), "--model", str(model), "--output", str(tmp_path / "x")]
    )
    assert code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        f"error: {model.as_uri()}: meta.concepts: was trained with concepts "
        "['four', 'seven', 'zero'], not ['four', 'zero'] (the concepts of View "
        "'digits-on-canvas')"
    )
    assert not (tmp_path / "x").exists()


def test_evaluate_reproduces_a_classifiers_evaluation(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    # Detection learns nothing in one cheap epoch (oLRP 1, AP 0); a classifier's predictions
    # after four vary (accuracy 0.44 on one thread, 0.54 on two; 7 and 9 predicted concepts),
    # so its confusion matrix and per-concept figures are numbers the scoring must reproduce.
    # (After two, one thread's run predicted 1 or 2 concepts, two threads' 3: CI failed.)
    run = _train(
        tmp_path_factory.mktemp("classify"),
        "01-classification-digits",
        "digits-imagefolder",
        400,
        epochs=4,
    )
    assert _evaluate(run, tmp_path / "again") == 0
    theirs = (run["out"] / "evaluation.json").read_bytes()
    assert (tmp_path / "again" / "evaluation.json").read_bytes() == theirs
    figures = json.loads(theirs)["classification"]
    assert 0 < figures["accuracy"] < 1
    # Predictions spread over several concepts: not one constant answer.
    assert sum(any(row[j] for row in figures["confusionMatrix"]) for j in range(10)) >= 3
    assert (tmp_path / "again" / "confusion_matrix.png").stat().st_size > 0
