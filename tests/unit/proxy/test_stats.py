"""Request metrics land in the buckets Prometheus' `le` bounds say."""

from __future__ import annotations

from bisect import bisect_left

from hypothesis import given
from hypothesis import strategies as st

from gossamer.proxy.stats import DURATION_BUCKETS_MS, SIZE_BUCKETS, RequestSeries

BOUNDS = sorted({*DURATION_BUCKETS_MS, *SIZE_BUCKETS})


@given(
    duration=st.one_of(st.sampled_from(BOUNDS), st.floats(0, 4e6, allow_nan=False)),
    size=st.one_of(st.sampled_from(SIZE_BUCKETS), st.integers(0, 2 * 10**9)),
)
def test_each_value_counts_in_the_first_bucket_whose_bound_holds_it(
    duration: float, size: int
) -> None:
    series = RequestSeries()
    series.observe(duration, size, size)
    # `le` is inclusive: a value equal to a bound belongs to that bound's bucket.
    assert series.duration.counts[bisect_left(DURATION_BUCKETS_MS, duration)] == 1
    assert series.request_bytes.counts[bisect_left(SIZE_BUCKETS, size)] == 1
    assert series.response_bytes.counts[bisect_left(SIZE_BUCKETS, size)] == 1
    assert sum(series.duration.counts) == sum(series.request_bytes.counts) == 1
    assert series.duration.sum == duration
    assert series.request_bytes.sum == size


def test_the_exposition_is_cumulative() -> None:
    series = RequestSeries()
    for duration in (0.2, 0.5, 3.0, 7200000.0):
        series.observe(duration, 10, 1000)
    lines = list(series.duration.lines("d", 'a="b"'))
    assert 'd_bucket{a="b",le="0.5"} 2' in lines
    assert 'd_bucket{a="b",le="5"} 3' in lines
    assert 'd_bucket{a="b",le="3600000"} 3' in lines
    assert 'd_bucket{a="b",le="+Inf"} 4' in lines
    assert 'd_count{a="b"} 4' in lines
