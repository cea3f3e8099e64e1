"""``workqueue.KeyedRunner``: one run per key at a time, no caller ever blocked, work left
meanwhile run once more, ages of running keys."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from kubevision_operator.workqueue import KeyedRunner


def test_a_busy_key_takes_the_work_and_the_caller_returns_at_once() -> None:
    runner: KeyedRunner[Any] = KeyedRunner()
    entered, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow() -> None:
        calls.append("slow")
        entered.set()
        assert release.wait(5)

    holder = threading.Thread(target=runner.run, args=(("ns", "a"), slow))
    holder.start()
    assert entered.wait(5)
    # Another key runs at once on this thread; the busy key returns without waiting.
    assert runner.run(("ns", "b"), lambda: calls.append("b")) is True
    assert runner.run(("ns", "a"), lambda: calls.append("first left")) is False
    assert runner.run(("ns", "a"), lambda: calls.append("second left")) is False
    assert [r.key for r in runner.running()] == [("ns", "a")]
    release.set()
    holder.join(5)
    # The holder ran the newest work left meanwhile, once, before letting the key go.
    assert calls == ["slow", "b", "second left"]
    assert runner.running() == []


def test_a_failure_is_raised_after_the_work_left_meanwhile() -> None:
    runner: KeyedRunner[Any] = KeyedRunner()
    entered, release = threading.Event(), threading.Event()
    calls: list[str] = []
    errors: list[BaseException] = []

    def failing() -> None:
        entered.set()
        assert release.wait(5)
        raise ValueError("boom")

    def hold() -> None:
        try:
            runner.run("k", failing)
        except ValueError as exc:
            errors.append(exc)

    holder = threading.Thread(target=hold)
    holder.start()
    assert entered.wait(5)
    runner.run("k", lambda: calls.append("later"))
    release.set()
    holder.join(5)
    assert calls == ["later"] and [str(e) for e in errors] == ["boom"]

    def fails_again() -> None:
        raise ValueError("again")

    with pytest.raises(ValueError, match="again"):
        runner.run("k", fails_again)
    assert runner.running() == []


def test_oldest_age_follows_the_clock() -> None:
    now = [100.0]
    runner: KeyedRunner[str] = KeyedRunner(clock=lambda: now[0])
    ages: list[float] = []

    def work() -> None:
        now[0] += 7.5
        ages.append(runner.oldest_age())

    assert runner.oldest_age() == 0.0
    runner.run("k", work)
    assert ages == [7.5] and runner.oldest_age() == 0.0
