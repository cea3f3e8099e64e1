"""Tagging figures of an evaluation (docs/metrics.md). To be built (issue 12)."""

from __future__ import annotations

from kubevision_api.evaluation import TaggingEvaluation
from kubevision_trainer.evaluation.predictions import TaggingPredictions


def evaluate(concepts: list[str], predictions: TaggingPredictions) -> TaggingEvaluation:
    """Every tagging figure of predictions; see docs/metrics.md."""
    raise NotImplementedError
