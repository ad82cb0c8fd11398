"""Channel-policy patterns (pure): `*`, scalar claims, and list claims ("member of")."""

import pytest

from realtime.channel_policy import MAX_COMBINATIONS, ChannelRule, channel_allowed
from realtime.channel_policy import topic_matches as matches


@pytest.mark.parametrize(
    ("topic", "hit"),
    [("site:1", True), ("site:2", True), ("site:3", False), ("site:12", False)],
)
def test_a_list_claim_matches_any_one_of_its_values(topic, hit):
    assert matches("site:{site_ids}", topic, {"site_ids": [1, 2]}) is hit


def test_list_claims_combine_with_scalars_and_wildcards():
    claims = {"org": "acme", "site_ids": ["a", "b"]}
    assert matches("{org}:site:{site_ids}:*", "acme:site:b:room-9", claims)
    assert not matches("{org}:site:{site_ids}:*", "acme:site:c:room-9", claims)
    assert not matches("{org}:site:{site_ids}:*", "other:site:a:x", claims)


@pytest.mark.parametrize(
    "value", [[], None, [None, True, {"x": 1}], {"site": 1}, "", [""], True]
)
def test_empty_missing_or_non_scalar_values_match_nothing(value):
    assert not matches("site:{site_ids}", "site:", {"site_ids": value})
    assert not matches("site:{site_ids}", "site:True", {"site_ids": value})


def test_a_value_cannot_smuggle_a_wildcard_or_a_longer_topic():
    assert not matches("site:{site_ids}", "site:1:admin", {"site_ids": ["1"]})
    assert not matches("site:{site_ids}", "site:anything", {"site_ids": ["*"]})
    assert matches("site:{site_ids}", "site:*", {"site_ids": ["*"]})


def test_too_many_combinations_match_nothing():
    side = int(MAX_COMBINATIONS**0.5) + 1
    claims = {"a": list(range(side)), "b": list(range(side))}
    assert side * side > MAX_COMBINATIONS
    assert not matches("{a}:{b}", "0:0", claims)
    assert matches("{a}:{b}", "0:0", {"a": [0], "b": list(range(side))})


def test_channel_allowed_with_a_membership_claim():
    rules = [ChannelRule("site:{site_ids}", "authenticated", "*", True, False)]
    claims = {"site_ids": [1, 2]}
    common = {"role": "authenticated", "claims": claims, "extension": "broadcast"}
    assert channel_allowed(rules, topic="site:2", action="read", **common)
    assert not channel_allowed(rules, topic="site:2", action="write", **common)
    assert not channel_allowed(rules, topic="site:3", action="read", **common)
