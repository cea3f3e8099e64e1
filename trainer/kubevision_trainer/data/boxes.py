"""Detection boxes as annotation files write them, checked against their image by the View's
``spec.dataset.boxPolicy``.

Annotation tools draw boxes that overshoot the border by a few pixels, so by default (``clip``)
a box that overlaps its image is clipped to it and one without any area inside it is dropped;
both are counted (:class:`~kubevision_trainer.data.sample.BoxCounts`). ``strict`` refuses
those instead (1 px of overhang, rounding in the tools, is still clipped). A malformed box (not
4 finite numbers, a negative width or height) is refused by both: it is a broken file, not a
sloppy drawing.
"""

from __future__ import annotations

import json
import math
from typing import Any

from kubevision_api.view import BoxPolicy
from kubevision_trainer.data.sample import Box

#: Pixels a box may overhang its image under ``strict`` (rounding in annotation tools).
TOLERANCE = 1.0
#: How many bad boxes one error lists; the others are counted.
MAX_LISTED = 20

# Reasons a box is dropped, as counted in dataset.json and status.dataset.boxes.
ZERO_SIZE = "ZeroSize"
OUTSIDE_IMAGE = "OutsideImage"
UNDER_ONE_PIXEL = "UnderOnePixelAfterResize"


class BoxError(ValueError):
    """A box that the policy refuses; the message says why, with the values."""


def coco_box(
    value: Any, size: tuple[int, int], policy: BoxPolicy
) -> tuple[Box | None, str | None, bool]:
    """Check a COCO ``bbox`` ``[x, y, width, height]`` against its image.

    Args:
        value: the ``bbox`` value as read from JSON.
        size: the image's declared ``(width, height)`` in pixels, in the frame of the boxes.
        policy: ``spec.dataset.boxPolicy``.

    Returns:
        ``(box, reason, clipped)``: the box as float ``(x1, y1, x2, y2)`` inside the image,
        ``None`` when dropped; the drop reason (:data:`ZERO_SIZE`, :data:`OUTSIDE_IMAGE`) or
        None; whether the box was clipped.

    Raises:
        BoxError: not 4 finite numbers, a negative width or height, or (``strict``) a box that
            ``clip`` would drop or clip by more than :data:`TOLERANCE`.
    """
    numbers = (
        isinstance(value, list)
        and len(value) == 4
        and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        )
    )
    if not numbers:
        raise BoxError(f"{json.dumps(value)} is not 4 finite numbers [x, y, width, height]")
    x, y, w, h = (float(v) for v in value)
    shown = f"bbox {json.dumps(value)}"
    if w < 0 or h < 0 or (policy is BoxPolicy.STRICT and (w == 0 or h == 0)):
        raise BoxError(
            f"{shown}: width {w:g} and height {h:g} must both be positive "
            "(COCO bbox is [x, y, width, height])"
        )
    if w == 0 or h == 0:
        return None, ZERO_SIZE, False
    width, height = size
    if policy is BoxPolicy.STRICT:
        _check_strict(x, y, w, h, size, shown)
    clipped = (
        min(max(x, 0.0), width),
        min(max(y, 0.0), height),
        min(max(x + w, 0.0), width),
        min(max(y + h, 0.0), height),
    )
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        if policy is BoxPolicy.STRICT:
            raise BoxError(f"{shown}: no area left inside the {width}x{height} image")
        return None, OUTSIDE_IMAGE, False
    return clipped, None, clipped != (x, y, x + w, y + h)


def _check_strict(
    x: float, y: float, w: float, h: float, size: tuple[int, int], shown: str
) -> None:
    width, height = size
    problems = []
    if x < -TOLERANCE:
        problems.append(f"x={x:g} is left of the image")
    if y < -TOLERANCE:
        problems.append(f"y={y:g} is above the image")
    if x + w > width + TOLERANCE:
        problems.append(f"x+w={x + w:g} exceeds width {width}")
    if y + h > height + TOLERANCE:
        problems.append(f"y+h={y + h:g} exceeds height {height}")
    if not problems:
        return
    # Boxes written as [x1, y1, x2, y2] are the usual mistake; say so when they fit that way.
    as_corners = (
        x >= -TOLERANCE
        and y >= -TOLERANCE
        and x < w <= width + TOLERANCE
        and y < h <= height + TOLERANCE
    )
    hint = (
        "; COCO bbox is [x, y, width, height], and these values would fit as [x1, y1, x2, y2]"
        if as_corners
        else f" (image {width}x{height}; COCO bbox is [x, y, width, height])"
    )
    raise BoxError(f"{shown}: {'; '.join(problems)}{hint}")


def listing(problems: list[tuple[str, str]]) -> str:
    """One line listing bad boxes: ``N bad boxes (bbox): <record>: <problem>; ...``, the first
    :data:`MAX_LISTED` of them, then how many more.

    Args:
        problems: ``(record, problem)`` pairs in file order; at least 2.
    """
    shown = "; ".join(f"{record}: {problem}" for record, problem in problems[:MAX_LISTED])
    more = len(problems) - MAX_LISTED
    tail = f"; and {more} more" if more > 0 else ""
    return f"{len(problems)} bad boxes (field bbox): {shown}{tail}"
