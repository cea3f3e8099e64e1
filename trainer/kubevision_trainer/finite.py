"""Where a checkpoint payload holds a NaN or an infinity: state dicts, optimizer state and
plain data, walked in order. A diverged run must never save such a payload, since a restart
resumes from it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

#: Elements checked at a time (4 Mi elements: 16 MB of float32).
_SLICE = 1 << 22


def first_non_finite(payload: Any, path: str = "") -> str | None:
    """The dotted path of the first floating tensor or float in ``payload`` (nested mappings
    and sequences) holding NaN or ±inf, e.g. ``model.layer1.0.bn1.running_var``; None when
    every value is finite. Integer and boolean tensors are finite by nature."""
    if isinstance(payload, torch.Tensor):
        if not (payload.is_floating_point() or payload.is_complex()):
            return None
        # In slices: isfinite's temporaries (an abs() and two masks) on a whole 300 MB tensor
        # would more than double the memory that saving a checkpoint needs.
        flat = payload.detach().reshape(-1)
        for start in range(0, flat.numel(), _SLICE):
            if not bool(torch.isfinite(flat[start : start + _SLICE]).all()):
                return path
        return None
    if isinstance(payload, float):
        return None if math.isfinite(payload) else path
    if isinstance(payload, Mapping):
        for key, value in payload.items():
            found = first_non_finite(value, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
        return None
    if isinstance(payload, Sequence) and not isinstance(payload, str | bytes):
        for index, value in enumerate(payload):
            found = first_non_finite(value, f"{path}[{index}]")
            if found is not None:
                return found
    return None
