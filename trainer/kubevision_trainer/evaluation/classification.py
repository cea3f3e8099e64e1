"""Classification figures of an evaluation (docs/metrics.md). To be built (issue 12)."""

from __future__ import annotations

from kubevision_api.evaluation import ClassificationEvaluation
from kubevision_trainer.evaluation.predictions import ClassificationPredictions


def evaluate(
    concepts: list[str], predictions: ClassificationPredictions
) -> ClassificationEvaluation:
    """Every classification figure of predictions; see docs/metrics.md."""
    raise NotImplementedError
