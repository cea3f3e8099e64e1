"""TokenReview results cached for the token's lifetime, keyed by its SHA-256."""

from __future__ import annotations

import base64
import json

from kubevision_operator.kube import Caller
from kubevision_operator.tokens import MAX_CACHE_SECONDS, TokenCache, expires_at, token_key


def _jwt(exp: float | None) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims: dict[str, object] = {"sub": "system:serviceaccount:a:trainer"}
    if exp is not None:
        claims["exp"] = exp
    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


CALLER = Caller("a", "trainer", "pod-1", "uid-1")


def test_expires_at_reads_the_exp_claim() -> None:
    assert expires_at(_jwt(1_900_000_000)) == 1_900_000_000
    assert expires_at(_jwt(None)) is None
    assert expires_at("not-a-jwt") is None
    assert expires_at("a.!!!.c") is None


def test_accepted_tokens_are_reviewed_once_until_they_expire() -> None:
    now = [1_000.0]
    reviews: list[str] = []

    def review(token: str) -> Caller | None:
        reviews.append(token)
        return None if token == "refused" else CALLER

    pod_alive = [True]
    cache = TokenCache(review, valid=lambda caller: pod_alive[0], clock=lambda: now[0])
    token = _jwt(1_600.0)
    assert cache.caller(token) == CALLER
    assert cache.caller(token) == CALLER
    assert reviews == [token]
    # Keyed by the hash, never the text.
    assert token not in repr(cache._known) and token_key(token) in cache._known
    pod_alive[0] = False  # its Pod was deleted: reviewed again (the API server refuses it)
    assert cache.caller(token) == CALLER and len(reviews) == 2
    pod_alive[0] = True
    now[0] = 1_600.0  # expired: reviewed again
    assert cache.caller(token) == CALLER and len(reviews) == 3
    # A refused token is not kept; a token without exp is not kept either.
    assert cache.caller("refused") is None and cache.caller("refused") is None
    plain = "opaque-token"
    cache.caller(plain)
    cache.caller(plain)
    assert reviews.count("refused") == 2 and reviews.count(plain) == 2
    # A far exp is capped.
    far = _jwt(now[0] + 10 * MAX_CACHE_SECONDS)
    cache.caller(far)
    now[0] += MAX_CACHE_SECONDS + 1
    cache.caller(far)
    assert reviews.count(far) == 2
