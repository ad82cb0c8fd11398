"""Depth bounds on client JSON: counted exactly, without recursion."""

import pytest

from realtime.bounds import MAX_JSON_DEPTH, too_deep


def nested(depth, leaf=1):
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


@pytest.mark.parametrize(
    ("value", "depth"),
    [(1, 0), ("x", 0), (None, 0), ({}, 1), ([], 1), ({"a": [1, {"b": 2}]}, 3)],
)
def test_depth_counts_arrays_and_objects(value, depth):
    assert not too_deep(value, depth)
    assert too_deep(value, depth - 1) == (depth > 0)


def test_the_default_limit_is_32_levels():
    assert MAX_JSON_DEPTH == 32
    assert not too_deep(nested(32))
    assert too_deep(nested(33))


def test_a_deep_branch_among_shallow_ones_is_found():
    value = {"wide": [{"x": i} for i in range(10_000)], "deep": nested(40)}
    assert too_deep(value)


def test_far_past_the_recursion_limit_it_still_answers():
    assert too_deep(nested(100_000))
    assert not too_deep(nested(100_000), limit=100_000)
