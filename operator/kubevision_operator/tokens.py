"""TokenReview results, cached for the token's remaining lifetime (docs/scale.md, Writes only
what changed).

A trainer sends every report with its Pod's projected ServiceAccount token; reviewing it
each time cost one TokenReview per report. An accepted token is kept here until the ``exp``
claim of the JWT (read after the API server accepted it, never trusted before), keyed by
the SHA-256 of the token, never by its text: a heap dump shows no usable credential. A
refused token is not kept (the next try reviews it again). A cached answer is used only
while ``valid`` holds of its caller (the operator's: the Pod the token was bound to is still
in the Pod cache with its uid); otherwise the token is reviewed again, so the token of a
deleted Pod is refused (401) as the API server refuses it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
import time
from collections.abc import Callable

from kubevision_operator.kube import Caller

#: Longest a result is kept, in seconds, whatever the token's ``exp`` says (bound tokens live
#: an hour by default and are rotated by the kubelet at 80 % of their life).
MAX_CACHE_SECONDS = 3600.0


def expires_at(token: str) -> float | None:
    """The ``exp`` claim (seconds since the epoch) of a JWT, unverified; None when the token
    is no JWT or has no numeric ``exp`` (RFC 7519, section 4.1.4)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) else None


def token_key(token: str) -> str:
    """The cache's key of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenCache:
    """Who holds a token, reviewed once per token.

    Args:
        review: the TokenReview (``Kube.token_review`` bound to the audience): the caller, or
            None when the API server refuses the token.
        valid: whether a cached caller may still be trusted without a review.
        clock: seconds since the epoch (``exp`` is wall-clock time).
    """

    def __init__(
        self,
        review: Callable[[str], Caller | None],
        valid: Callable[[Caller], bool] = lambda caller: True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._review = review
        self._valid = valid
        self._clock = clock
        self._known: dict[str, tuple[Caller, float]] = {}
        self._lock = threading.Lock()

    def caller(self, token: str) -> Caller | None:
        """The caller of ``token``: from the cache while the token lives, else reviewed.

        Raises:
            KubeError: the TokenReview failed.
        """
        key = token_key(token)
        now = self._clock()
        with self._lock:
            held = self._known.pop(key, None)
        if held is not None and held[1] > now and self._valid(held[0]):
            with self._lock:
                self._known[key] = held
            return held[0]
        caller = self._review(token)
        if caller is None:
            return None
        exp = expires_at(token)
        if exp is not None:
            with self._lock:
                self._known = {k: v for k, v in self._known.items() if v[1] > now}
                self._known[key] = (caller, min(exp, now + MAX_CACHE_SECONDS))
        return caller

    def __len__(self) -> int:
        with self._lock:
            return len(self._known)
