from convergence.ratelimit import FailureLimiter


def test_blocks_after_limit_within_window_and_forgets_after_it():
    limiter = FailureLimiter(limit=3, window=60)
    for t in (0, 1, 2):
        assert not limiter.blocked("10.0.0.1", t)
        limiter.failed("10.0.0.1", t)
    assert limiter.blocked("10.0.0.1", 3)
    assert not limiter.blocked("10.0.0.2", 3)  # other sources are not affected
    assert not limiter.blocked("10.0.0.1", 60)  # the window that saw the first failure is over


def test_failures_in_an_old_window_do_not_count():
    limiter = FailureLimiter(limit=2, window=10)
    limiter.failed("a", 0)
    limiter.failed("a", 11)
    assert not limiter.blocked("a", 12)
    limiter.failed("a", 12)
    assert limiter.blocked("a", 13)


def test_memory_is_bounded():
    limiter = FailureLimiter(limit=1, window=10, max_keys=100)
    for i in range(1000):
        limiter.failed(i, 0)
    assert len(limiter._failures) <= 100
    assert limiter.blocked(999, 1)  # the newest keys are kept
