"""Detection figures of an evaluation (docs/metrics.md). To be built (issue 12)."""

from __future__ import annotations

from kubevision_api.evaluation import DetectionEvaluation
from kubevision_trainer.evaluation.predictions import DetectionPredictions


def evaluate(concepts: list[str], predictions: DetectionPredictions) -> DetectionEvaluation:
    """Every detection figure of predictions; see docs/metrics.md."""
    raise NotImplementedError
