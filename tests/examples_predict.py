"""``kubevision predict`` against the trainer's own evaluation predictions (issue 14): the
trained example's best checkpoint run through the trainer's validation loader (its cache, its
eval preset, ``presets.model_input``) on one side, the exported bundle through
``kubevision predict`` (onnxruntime, its own decoding and resize) on the other, image by image.

A threshold is, by construction, one of the validation scores (the F1- or LRP-optimal cut is
taken at a predicted score), so the image or box that sets it sits exactly on it, and the
graphs' float differences (about 1e-6) decide its side either way: items whose score lies
within :data:`TIE` of their threshold are left out of the comparison, and counted."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kubevision_api.bundle import Postprocessing
from kubevision_api.plan import TrainingPlan
from kubevision_api.view import Task
from kubevision_trainer import checkpoint, main, models, presets
from kubevision_trainer.data import prepare
from kubevision_trainer.settings import TrainerSettings

#: Scores this close to their threshold may fall on either side (module docstring).
TIE = 1e-5
#: Box corners, pixels, and scores: the parity the graph tests hold on fresh models.
BOX_PX = 1e-3
SCORE = 1e-4


@dataclass
class Agreement:
    """What one comparison found: images compared, items left out as ties, the largest
    differences seen."""

    images: int = 0
    ties: int = 0
    items: int = 0
    score_diff: float = 0.0
    box_diff: float = 0.0
    notes: list[str] = field(default_factory=list)


def trainer_outputs(
    plan: TrainingPlan, settings: TrainerSettings
) -> tuple[list[str], list[Any], list[Any]]:
    """The best checkpoint's outputs on the validation split, by the trainer's own loader:
    the image URIs in loader order; per image the ``(C,)`` logits (classification, tagging) or
    the detector's output dict (boxes in network-input pixels, 1-based labels); and per image
    the loader's target (the label, or the detection target dict)."""
    data = prepare.prepare(plan, settings)
    model = models.build(
        plan.spec.architecture, plan.task, len(plan.concepts), plan.spec.image_resizer
    )
    model.load_state_dict(checkpoint.CheckpointStore(plan.output_uri).load_best()["model"])
    model.eval()
    _, val = main.loaders(plan, data, torch.device("cpu"))
    outputs: list[Any] = []
    targets: list[Any] = []
    with torch.no_grad():
        for batch, batch_targets in val:
            images = list(batch) if plan.task is Task.DETECTION else batch
            result = model(presets.model_input(plan.task, images, torch.float32))
            outputs.extend(list(result))
            targets.extend(list(batch_targets))
    return [image.sample.uri for image in data.val], outputs, targets


def run_predict(bundle: Path, images: list[str], cwd: Path, env: dict[str, str]) -> list[Any]:
    """``kubevision predict --model bundle IMAGE...``'s JSON lines, in image order."""
    done = subprocess.run(
        ["kubevision", "predict", "--model", str(bundle), *images],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # onnxruntime's graph optimiser is told to keep quiet: stderr stays clean.
    assert "onnxruntime" not in done.stderr, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["image"] for line in lines] == images
    return lines


def compare(post: Postprocessing, trainer: list[Any], predicted: list[Any]) -> Agreement:
    """Assert that ``predicted`` (predict's lines) reproduces ``trainer`` (the trainer's
    outputs) at the bundle's thresholds: the same top concept (classification), the same
    concept sets (tagging), the same boxes, concepts and scores (detection); returns what was
    compared."""
    found = Agreement(images=len(trainer))
    cuts = np.asarray(
        post.thresholds
        if post.thresholds is not None
        else [post.default_threshold] * len(post.concepts),
        dtype=np.float64,
    )
    for ours, line in zip(trainer, predicted, strict=True):
        if post.task is Task.CLASSIFICATION:
            probabilities = torch.softmax(ours.double(), dim=0).numpy()
            assert line["top"] == post.concepts[int(np.argmax(probabilities))], line["image"]
            scores = {c["concept"]: c["score"] for c in line["concepts"]}
            expected = dict(zip(post.concepts, probabilities.tolist(), strict=True))
            diffs = [abs(scores[n] - expected[n]) for n in post.concepts]
            found.score_diff = max(found.score_diff, *diffs)
            found.items += 1
        elif post.task is Task.TAGGING:
            probabilities = torch.sigmoid(ours.double()).numpy()
            clear = np.abs(probabilities - cuts) > TIE
            found.ties += int((~clear).sum())
            expected_set = {
                post.concepts[i] for i in np.flatnonzero((probabilities >= cuts) & clear)
            }
            got = {c["concept"] for c in line["concepts"]}
            got_clear = {n for n in got if clear[post.concepts.index(n)]}
            assert got_clear == expected_set, (line["image"], got, expected_set)
            diffs = [
                abs(line["scores"][n] - float(p))
                for n, p in zip(post.concepts, probabilities, strict=True)
            ]
            found.score_diff = max(found.score_diff, *diffs)
            found.items += len(expected_set)
        else:
            _compare_boxes(found, post, cuts, ours, line)
    return found


def _compare_boxes(
    found: Agreement, post: Postprocessing, cuts: Any, ours: dict[str, Any], line: Any
) -> None:
    labels = ours["labels"].numpy() - 1
    scores = ours["scores"].double().numpy()
    boxes = ours["boxes"].double().numpy()
    cut = cuts[labels] if len(labels) else np.zeros(0)
    clear = np.abs(scores - cut) > TIE
    found.ties += int((~clear).sum())
    keep = (scores >= cut) & clear
    expected = sorted(
        (post.concepts[int(label)], float(score), box.tolist())
        for label, score, box in zip(labels[keep], scores[keep], boxes[keep], strict=True)
    )
    got = sorted(
        (b["concept"], float(b["score"]), list(b["box"]))
        for b in line["boxes"]
        if abs(b["score"] - float(cuts[post.concepts.index(b["concept"])])) > TIE
    )
    assert len(got) == len(expected), (line["image"], got, expected)
    # Pair each of ours with predict's nearest box of the same concept (scores may tie).
    unused = list(got)
    for concept, score, box in expected:
        candidates = [g for g in unused if g[0] == concept]
        assert candidates, (line["image"], concept, score, box)
        best = min(
            candidates, key=lambda g: max(abs(a - b) for a, b in zip(g[2], box, strict=True))
        )
        unused.remove(best)
        box_diff = max(abs(a - b) for a, b in zip(best[2], box, strict=True))
        found.box_diff = max(found.box_diff, box_diff)
        found.score_diff = max(found.score_diff, abs(best[1] - score))
        found.items += 1
    assert found.box_diff <= BOX_PX and found.score_diff <= SCORE, (
        line["image"],
        found.box_diff,
        found.score_diff,
    )
