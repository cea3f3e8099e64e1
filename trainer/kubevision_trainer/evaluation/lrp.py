"""Localisation Recall Precision (LRP) and optimal LRP of one concept, from a matching of its
detections to its ground truth (docs/metrics.md, "Detection").

Definitions: Oksuz et al., "Localization Recall Precision (LRP): A New Performance Metric for
Object Detection", ECCV 2018, and "One Metric to Measure Them All: Localisation Recall
Precision (LRP) for Evaluating Visual Detection Tasks", TPAMI 2022 (eqs. 6-10). With the
detections of score >= s, matched greedily in score order at IoU >= tau = 0.5:

    LRP(s) = (sum over TP of (1 - IoU) / (1 - tau) + FP + FN) / (TP + FP + FN)

in [0, 1] (each TP's term is at most 1 since IoU >= tau); 0 is perfect. At a threshold the
components are localisation = mean over TP of (1 - IoU) / (1 - tau), FP part = FP / (TP + FP),
FN part = FN / (TP + FN), as vernier (0.5.4, ``vernier.instance.optimal_lrp``) reports them,
and ``LRP = (TP * loc + FP + FN) / (TP + FP + FN)``.

Optimal LRP is the minimum of LRP(s) over every threshold s. The kept detections change only
at a detection's score, so the minimum is taken exactly over the distinct scores and over
"keep none" (a threshold above every score, whose LRP is FN / FN = 1), not on a grid as
vernier does (0.00, 0.01, ..., 1.00). Ties go to the larger threshold (fewer detections kept;
vernier's rule), so an optimal LRP of 1.0 always means "keep none": no threshold does better
than predicting nothing, and the threshold is then None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from kubevision_api.evaluation import Lrp
from kubevision_trainer.evaluation.predictions import BoolArray, FloatArray

#: The IoU from which a matched detection is a true positive (LRP's tau; COCO's AP50).
TP_IOU: Final = 0.5


@dataclass(frozen=True)
class Matches:
    """One concept's detections and how they were matched.

    Attributes:
        scores: ``(D,)`` float64, the detections' scores.
        true_positive: ``(D,)`` bool, True where the detection was matched to a ground-truth
            box (greedily in score order over all detections, IoU >= ``TP_IOU``).
        iou: ``(D,)`` float64, the IoU of each true positive with its box; ignored elsewhere.
        ground_truth: the concept's ground-truth boxes (G >= 0).
    """

    scores: FloatArray
    true_positive: BoolArray
    iou: FloatArray
    ground_truth: int

    @classmethod
    def empty(cls, ground_truth: int) -> Matches:
        """No detection."""
        return cls(
            scores=np.zeros(0),
            true_positive=np.zeros(0, dtype=bool),
            iou=np.zeros(0),
            ground_truth=ground_truth,
        )


@dataclass(frozen=True)
class Operating:
    """LRP with the counts of one threshold (the optimal one, for the concept's figures).

    Attributes:
        lrp: LRP and its components at ``lrp.threshold``.
        true_positives, false_positives, false_negatives: counts of the kept detections.
        iou_sum: sum of the true positives' IoU.
    """

    lrp: Lrp
    true_positives: int
    false_positives: int
    false_negatives: int
    iou_sum: float


def _operating(
    tp: int, fp: int, ground_truth: int, loc_sum: float, iou_sum: float, threshold: float | None
) -> Operating:
    """LRP from the counts of one threshold (``loc_sum`` = sum over TP of (1 - IoU) / (1 - tau))."""
    fn = ground_truth - tp
    total = tp + fp + fn
    return Operating(
        lrp=Lrp(
            lrp=(loc_sum + fp + fn) / total if total else 0.0,
            localisation=loc_sum / tp if tp else None,
            false_positive=fp / (tp + fp) if tp + fp else None,
            false_negative=fn / ground_truth if ground_truth else 0.0,
            threshold=threshold,
        ),
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        iou_sum=iou_sum,
    )


def lrp_at(matches: Matches, threshold: float) -> Operating:
    """LRP of the detections of score >= ``threshold``.

    Raises:
        ValueError: a concept without ground truth (LRP is not defined for it).
    """
    if matches.ground_truth == 0:
        raise ValueError("LRP needs at least one ground-truth box")
    kept = matches.scores >= threshold
    hits = kept & matches.true_positive
    tp = int(np.count_nonzero(hits))
    loc_sum = float(np.sum((1.0 - matches.iou[hits]) / (1.0 - TP_IOU)))
    return _operating(
        tp,
        int(np.count_nonzero(kept)) - tp,
        matches.ground_truth,
        loc_sum,
        float(np.sum(matches.iou[hits])),
        threshold,
    )


def optimal_lrp(matches: Matches) -> Operating | None:
    """Optimal LRP: LRP minimised exactly over every threshold (module docstring), with its
    components and counts at the minimising threshold; None without ground truth.

    When the minimum is 1.0 the result is "keep none": threshold None, no TP or FP
    (localisation and FP part None), FN part 1.0.
    """
    ground_truth = matches.ground_truth
    if ground_truth == 0:
        return None
    order = np.argsort(-matches.scores, kind="mergesort")
    scores = matches.scores[order]
    hit = matches.true_positive[order]
    iou = np.where(hit, matches.iou[order], 0.0)
    tp = np.cumsum(hit)
    fp = np.cumsum(~hit)
    loc = np.cumsum(np.where(hit, (1.0 - iou) / (1.0 - TP_IOU), 0.0))
    ious = np.cumsum(iou)
    # Threshold s keeps a prefix that ends at the last detection of score s.
    ends = np.flatnonzero(np.append(scores[1:] != scores[:-1], True)) if len(scores) else order
    lrp = (loc[ends] + fp[ends] + (ground_truth - tp[ends])) / (fp[ends] + ground_truth)
    # Candidates from the largest threshold down, "keep none" (LRP 1) first: argmin returns
    # the first minimum, i.e. the largest threshold among ties.
    best = int(np.argmin(np.concatenate(([1.0], lrp))))
    if best == 0:
        return _operating(0, 0, ground_truth, 0.0, 0.0, None)
    end = int(ends[best - 1])
    return _operating(
        int(tp[end]),
        int(fp[end]),
        ground_truth,
        float(loc[end]),
        float(ious[end]),
        float(scores[end]),
    )
