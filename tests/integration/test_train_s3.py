"""The trainer reads its dataset from, and writes its checkpoints and records to, a real S3
API server on loopback; everything is read back from the server."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import torch

from kubevision_api.status import CheckpointStatus
from kubevision_trainer import main
from kubevision_trainer.report.reporter import NullReporter
from kubevision_trainer.settings import TrainerSettings
from tests.integration import services
from tests.trainer.trainer_helpers import classification_plan, write_digits_imagefolder

DIGITS = (3, 5, 8)


class Checkpoints(NullReporter):
    """Keeps the checkpoint events."""

    def __init__(self) -> None:
        self.events: list[CheckpointStatus] = []

    def checkpoint(self, status: CheckpointStatus) -> None:
        self.events.append(status)


def test_train_from_and_to_s3(s3_env: services.S3Server, tmp_path: Path) -> None:
    local = write_digits_imagefolder(tmp_path / "digits", DIGITS, per_class=15, size=32)
    client = s3_env.client()
    bucket = s3_env.create_bucket()
    uploaded = 0
    for path in sorted(local.rglob("*.png")):
        client.put_object(
            Bucket=bucket, Key=f"datasets/digits/{path.relative_to(local)}", Body=path.read_bytes()
        )
        uploaded += 1
    assert uploaded == 45

    plan = classification_plan(
        Path("/unused"), f"s3://{bucket}/runs/digits-test/", DIGITS, epochs=2, dataLoaderWorkers=0
    )
    plan = plan.model_copy(
        update={
            "dataset": plan.dataset.model_copy(update={"uri": f"s3://{bucket}/datasets/digits"})
        }
    )
    reporter = Checkpoints()
    card = main.run(
        plan, device="cpu", reporters=[reporter], settings=TrainerSettings(cache_dir=tmp_path / "c")
    )

    def get(key: str) -> bytes:
        body: bytes = client.get_object(Bucket=bucket, Key=f"runs/digits-test/{key}")["Body"].read()
        return body

    best = get("checkpoints/best.pt")
    events = reporter.events
    assert events, "no best checkpoint was reported"
    assert hashlib.sha256(best).hexdigest() == events[-1].sha256
    assert len(best) == events[-1].bytes
    assert events[-1].uri == f"s3://{bucket}/runs/digits-test/checkpoints/best.pt"
    state = torch.load(io.BytesIO(best), weights_only=True)
    assert state["epoch"] == events[-1].epoch
    assert state["model"]["fc.weight"].shape == (3, 512)
    last = torch.load(io.BytesIO(get("checkpoints/last.pt")), weights_only=True)
    assert last["progress"]["epoch"] == 2

    metrics = [json.loads(line) for line in get("metrics.jsonl").decode().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    batches = [json.loads(line) for line in get("batches.jsonl").decode().splitlines()]
    # 45 images, validationFraction 0.2 -> 36 train images (stratified per digit) -> 5 batches.
    dataset = json.loads(get("dataset.json"))
    train = [i for i in dataset["images"] if i["split"] == "train"]
    assert len(dataset["images"]) == 45
    assert dataset["source"] == f"s3://{bucket}/datasets/digits"
    assert len(batches) == 2 * -(-len(train) // 8)
    for image in dataset["images"]:
        data = (local / image["path"]).read_bytes()
        assert image["sha256"] == hashlib.sha256(data).hexdigest()
    model_card = json.loads(get("model.json"))
    assert model_card["concepts"] == ["eight", "five", "three"]
    assert model_card == card
