"""ProgressDeadline: a floor on the rate, not a timeout per read."""

from __future__ import annotations

import pytest

from harness._kit.deadlines import ProgressDeadline


def test_a_client_at_the_floor_never_meets_the_deadline() -> None:
    deadline = ProgressDeadline(timeout=30.0, min_rate=1024.0, now=0.0)
    for second in range(1, 600):
        deadline.progress(1024)
        assert deadline.at > second


def test_a_trickle_meets_it_about_timeout_seconds_in() -> None:
    deadline = ProgressDeadline(timeout=30.0, min_rate=1024.0, now=0.0)
    second = 0
    while deadline.at > second:
        deadline.progress(1)
        second += 1
    assert 30 <= second <= 31
    assert "under the floor of 1024 bytes/s" in deadline.describe(float(second))


def test_restart_counts_from_the_new_request() -> None:
    deadline = ProgressDeadline(timeout=5.0, min_rate=100.0, now=0.0)
    deadline.progress(10_000)
    deadline.restart(200.0)
    assert deadline.at == 205.0


@pytest.mark.parametrize(("timeout", "rate"), [(0.0, 1.0), (1.0, 0.0)])
def test_non_positive_settings_are_refused(timeout: float, rate: float) -> None:
    with pytest.raises(ValueError):
        ProgressDeadline(timeout=timeout, min_rate=rate, now=0.0)
