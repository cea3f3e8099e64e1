"""The graph's outputs for one image to what ``kubevision predict`` prints, as
``postprocessing.json`` (:class:`kubevision_api.bundle.Postprocessing`) says, with numpy.

- classification: ``softmax(logits)``, every concept by score descending, and the top one
  (arg-max; no threshold).
- tagging: ``sigmoid(logits)``; the concepts whose probability reaches their threshold, by score
  descending, and every concept's score.
- detection: the rows under ``num_detections`` whose score reaches their concept's threshold
  (NMS is inside the graph), boxes mapped from network-input pixels back to the image's own
  pixels by inverting the resizer (:func:`image_boxes`).

Scores are computed in float64 from the float32 outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from kubevision_api.bundle import Postprocessing
from kubevision_cli.serving.preprocess import Placement


def thresholds(post: Postprocessing) -> npt.NDArray[np.float64]:
    """Per concept, in class-index order: ``post.thresholds``, or ``default_threshold`` for
    every concept when the bundle has none."""
    if post.thresholds is None:
        return np.full(len(post.concepts), post.default_threshold, dtype=np.float64)
    return np.asarray(post.thresholds, dtype=np.float64)


def softmax(logits: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """``exp(z - max z) / sum exp(z - max z)`` over the last axis (the max subtracted so that
    large logits do not overflow; the result is the same)."""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    out: npt.NDArray[np.float64] = e / e.sum(axis=-1, keepdims=True)
    return out


def sigmoid(logits: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """``1 / (1 + exp(-z))``, element-wise."""
    z = np.asarray(logits, dtype=np.float64)
    out: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-z))
    return out


def _ranked(names: list[str], scores: npt.NDArray[np.float64], keep: Any) -> list[dict[str, Any]]:
    # A stable sort: equal scores keep class-index order.
    order = np.argsort(-scores, kind="stable")
    return [{"concept": names[i], "score": float(scores[i])} for i in order if bool(keep[i])]


def classification(post: Postprocessing, logits: npt.NDArray[np.floating]) -> dict[str, Any]:
    """``{"top": name, "concepts": [{"concept", "score"}, ...]}`` for one image's ``(C,)``
    logits: every concept, by softmax probability descending."""
    scores = softmax(logits)
    return {
        "top": post.concepts[int(np.argmax(scores))],
        "concepts": _ranked(post.concepts, scores, np.ones(len(scores), dtype=bool)),
    }


def tagging(post: Postprocessing, logits: npt.NDArray[np.floating]) -> dict[str, Any]:
    """``{"concepts": [...], "scores": {name: score}}`` for one image's ``(C,)`` logits: the
    concepts whose sigmoid probability is at or above their threshold, by score descending,
    and every concept's probability in class-index order."""
    scores = sigmoid(logits)
    return {
        "concepts": _ranked(post.concepts, scores, scores >= thresholds(post)),
        "scores": {name: float(s) for name, s in zip(post.concepts, scores, strict=True)},
    }


def image_boxes(boxes: npt.NDArray[np.floating], where: Placement) -> npt.NDArray[np.float64]:
    """Boxes in network-input pixels to the upright image's pixels: the resizer undone.

    The resizer maps an image point ``p`` to ``p * scaled / image + offset`` per axis
    (``transforms.Resize`` scales boxes by the size ratio, then the centre crop subtracts its
    anchor or the letterbox adds its margin); this is its inverse, clipped to the image.

    Args:
        boxes: ``(K, 4)`` x1, y1, x2, y2 in network-input pixels.
        where: the image's :class:`~kubevision_cli.serving.preprocess.Placement`.

    Returns:
        ``(K, 4)`` float64 x1, y1, x2, y2 in pixels of the upright image, within
        ``[0, width] x [0, height]``.
    """
    array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    height, width = where.image
    scaled_h, scaled_w = where.scaled
    left, top = where.offset
    xs = (array[:, 0::2] - left) * (width / scaled_w)
    ys = (array[:, 1::2] - top) * (height / scaled_h)
    out = np.empty_like(array)
    out[:, 0::2] = np.clip(xs, 0.0, width)
    out[:, 1::2] = np.clip(ys, 0.0, height)
    return out


def detection(
    post: Postprocessing,
    outputs: dict[str, npt.NDArray[Any]],
    where: Placement,
) -> dict[str, Any]:
    """``{"boxes": [{"concept", "score", "box": [x1, y1, x2, y2]}, ...]}`` for one image.

    Args:
        post: the bundle's post-processing.
        outputs: this image's rows of the graph's outputs: ``boxes`` ``(D, 4)``, ``scores``
            ``(D,)``, ``labels`` ``(D,)`` (0-based concept index), ``num_detections`` ``()``.
        where: the image's placement (boxes are mapped back to its pixels).

    Returns:
        The detections among the first ``num_detections`` rows whose score reaches their
        concept's threshold, by score descending (the padding rows are never read).

    Raises:
        ValueError: a label outside the concepts (a graph that does not match the bundle).
    """
    count = int(np.asarray(outputs["num_detections"]).reshape(()))
    scores = np.asarray(outputs["scores"], dtype=np.float64)[:count]
    labels = np.asarray(outputs["labels"], dtype=np.int64)[:count]
    if labels.size and (labels.min() < 0 or labels.max() >= len(post.concepts)):
        raise ValueError(
            f"the graph gave labels {sorted(set(labels.tolist()))}, outside the "
            f"{len(post.concepts)} concepts of postprocessing.json"
        )
    kept = scores >= thresholds(post)[labels]
    boxes = image_boxes(np.asarray(outputs["boxes"])[:count][kept], where)
    scores, labels = scores[kept], labels[kept]
    order = np.argsort(-scores, kind="stable")
    return {
        "boxes": [
            {
                "concept": post.concepts[int(labels[i])],
                "score": float(scores[i]),
                "box": [float(v) for v in boxes[i]],
            }
            for i in order
        ]
    }
