import pytest

from console.engine.retry import Backoff


def test_full_jitter_stays_under_a_growing_capped_ceiling() -> None:
    b = Backoff(base=0.1, cap=1.0, rng=lambda: 1.0)
    assert [round(b.next_delay(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    assert b.next_delay() == pytest.approx(0.1)
    zero = Backoff(base=0.1, cap=1.0, rng=lambda: 0.0)
    assert zero.next_delay() == 0.0


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(base=0, cap=1)
