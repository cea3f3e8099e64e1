"""The status pacer: the first write goes at once, later ones wait for the interval, and one
reconcile is asked for per held write."""

from __future__ import annotations

from kubevision_operator.pacing import Pacer


def test_first_write_goes_later_ones_wait_for_the_interval() -> None:
    now = [100.0]
    pacer: Pacer[str] = Pacer(5.0, clock=lambda: now[0])
    assert pacer.hold("mv") is None
    pacer.wrote("mv")
    now[0] = 101.0
    assert pacer.hold("mv") == 4.0  # ask for a reconcile in 4 s
    now[0] = 102.5
    assert pacer.hold("mv") == 0.0  # asked for already
    assert pacer.hold("other") is None  # per key
    now[0] = 105.0
    assert pacer.hold("mv") is None  # due: the held write goes
    pacer.wrote("mv")
    now[0] = 106.0
    assert pacer.hold("mv") == 4.0  # a new window, a new reconcile asked for
    pacer.forget("mv")
    assert pacer.hold("mv") is None


def test_zero_interval_never_holds() -> None:
    pacer: Pacer[str] = Pacer(0.0)
    pacer.wrote("mv")
    assert pacer.hold("mv") is None


def test_a_write_of_less_worth_waits_longer_and_a_worthier_one_is_not_held_by_it() -> None:
    now = [0.0]
    pacer: Pacer[str] = Pacer(5.0, clock=lambda: now[0])
    pacer.wrote("mv")
    now[0] = 1.0
    assert pacer.hold("mv", 30.0) == 29.0  # progress only: in 29 s
    now[0] = 2.0
    assert pacer.hold("mv", 30.0) == 0.0  # asked for already
    assert pacer.hold("mv") == 3.0  # an epoch ended: sooner, asked for again
    assert pacer.hold("mv") == 0.0
    now[0] = 5.0
    assert pacer.hold("mv") is None
    # A due time that passed without a write does not hold a later one back.
    now[0] = 6.0
    assert pacer.hold("mv", 30.0) == 24.0
