import pytest

from realtime.row_policy import (
    claims_key,
    filter_admitted,
    old_row_visible,
    redacted_old_record,
    relevant_claims,
    row_visible,
)

SITE = [[("site_id", "site_id")]]


def visible(policies, row, claims, role="authenticated") -> bool:
    return row_visible(role=role, policies=policies, row=row, claims=claims)


def test_service_role_sees_everything():
    assert row_visible(role="service_role", policies=[], row={"a": 1}, claims={})
    assert row_visible(role="service_role", policies=SITE, row=None, claims={})
    assert visible(SITE, {"site_id": 2}, {"site_id": 1}, role="service_role")


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_no_policies_means_invisible(role):
    assert not visible([], {"site_id": 1}, {"site_id": 1}, role=role)


def test_policy_without_rules_shows_every_row():
    assert visible([[]], {"site_id": 1}, {})
    assert visible([[]], {}, {})
    assert visible([[]], None, {})


def test_matching_claim_shows_the_row():
    assert visible(SITE, {"site_id": "abc"}, {"site_id": "abc"})
    assert not visible(SITE, {"site_id": "abc"}, {"site_id": "abd"})


@pytest.mark.parametrize(
    ("row_value", "claim_value"),
    [(42, "42"), ("42", 42), (42, 42), (42.0, "42"), (True, "true"), (False, False)],
)
def test_numbers_and_strings_compare_as_the_same_scalar(row_value, claim_value):
    assert visible(SITE, {"site_id": row_value}, {"site_id": claim_value})


@pytest.mark.parametrize(
    ("row_value", "claim_value"),
    [
        (42, "042"),
        (42, " 42"),
        (42, "42.0"),
        (42, 43),
        (1, True),
        (True, 1),
        ("True", True),
        (0, ""),
        (0, False),
        (1.5, "1"),
    ],
)
def test_near_misses_do_not_hold(row_value, claim_value):
    assert not visible(SITE, {"site_id": row_value}, {"site_id": claim_value})


def test_missing_claim_never_holds():
    assert not visible(SITE, {"site_id": 1}, {})
    assert not visible(SITE, {"site_id": None}, {})


def test_missing_column_never_holds():
    assert not visible(SITE, {}, {"site_id": 1})
    assert not visible(SITE, None, {"site_id": 1})


def test_null_on_either_side_never_holds():
    assert not visible(SITE, {"site_id": None}, {"site_id": None})
    assert not visible(SITE, {"site_id": 1}, {"site_id": None})
    assert not visible(SITE, {"site_id": None}, {"site_id": "1"})


@pytest.mark.parametrize(
    "claim", [[1, 2], [1], {"$ne": 1}, {}, [], float("nan"), float("inf")]
)
def test_container_and_non_finite_claims_match_nothing(claim):
    for value in (1, 2, [1], [1, 2], {"$ne": 1}, {}, [], claim):
        assert not visible(SITE, {"site_id": value}, {"site_id": claim})


def test_every_rule_of_a_policy_must_hold():
    policies = [[("site_id", "site_id"), ("owner_id", "sub")]]
    claims = {"site_id": "1", "sub": "u1"}
    assert visible(policies, {"site_id": 1, "owner_id": "u1"}, claims)
    assert not visible(policies, {"site_id": 1, "owner_id": "u2"}, claims)
    assert not visible(policies, {"site_id": 2, "owner_id": "u1"}, claims)
    assert not visible(policies, {"site_id": 1, "owner_id": "u1"}, {"site_id": "1"})


def test_any_policy_may_grant():
    policies = [[("site_id", "site_id")], [("owner_id", "sub")]]
    claims = {"site_id": "1", "sub": "u1"}
    assert visible(policies, {"site_id": 1, "owner_id": "x"}, claims)
    assert visible(policies, {"site_id": 9, "owner_id": "u1"}, claims)
    assert not visible(policies, {"site_id": 9, "owner_id": "x"}, claims)


def test_relevant_claims_lists_what_policies_read():
    policies = [[("site_id", "site_id"), ("owner_id", "sub")], [("org", "org_id")], []]
    assert relevant_claims(policies) == frozenset({"site_id", "sub", "org_id"})
    assert relevant_claims([]) == frozenset()
    assert relevant_claims([[]]) == frozenset()


def test_claims_outside_relevant_ones_do_not_change_visibility():
    row = {"site_id": 1}
    base = {"site_id": "1"}
    assert visible(SITE, row, base) == visible(SITE, row, {**base, "sub": "anyone"})


def old_visible(change_type, old_record, claims, role="authenticated") -> bool:
    return old_row_visible(
        role=role,
        policies=SITE,
        change_type=change_type,
        old_record=old_record,
        claims=claims,
    )


def test_an_updates_old_row_is_judged_on_its_own():
    moved = {"id": 1, "site_id": 99, "title": "secret"}
    assert not old_visible("UPDATE", moved, {"site_id": 42})
    assert old_visible("UPDATE", moved, {"site_id": "99"})
    assert old_visible("UPDATE", moved, {"site_id": 42}, role="service_role")
    assert old_visible("UPDATE", None, {"site_id": 42})  # nothing to hide


def test_an_insert_or_delete_has_no_second_row_to_judge():
    # A DELETE is judged on its old row, as the change itself.
    assert old_visible("DELETE", {"id": 1, "site_id": 99}, {"site_id": 42})
    assert old_visible("INSERT", None, {"site_id": 42})


def test_a_hidden_old_row_keeps_only_its_id():
    assert redacted_old_record({"id": 7, "site_id": 99, "title": "x"}) == {"id": 7}
    assert redacted_old_record({"id": None, "title": "x"}) == {"id": None}
    assert redacted_old_record({"site_id": 99, "title": "x"}) == {}
    assert redacted_old_record(None) == {}


# --- Membership rules: row[column] in claims[claim] ----------------------------

SITES = [[("site_id", "site_ids", True)]]


@pytest.mark.parametrize(
    "site_id, seen", [(1, True), (2, True), ("2", True), (3, False)]
)
def test_a_membership_rule_shows_rows_whose_value_is_in_the_list(site_id, seen):
    assert visible(SITES, {"site_id": site_id}, {"site_ids": [1, "2"]}) is seen


@pytest.mark.parametrize("claim", [None, [], 1, "1", {"1": 1}, [[1]], [None]])
def test_a_membership_rule_needs_a_list_holding_the_value(claim):
    assert not visible(SITES, {"site_id": 1}, {"site_ids": claim})


def test_membership_combines_with_equality_and_other_policies():
    both = [[("site_id", "site_ids", True), ("owner_id", "sub")]]
    claims = {"site_ids": [1, 2], "sub": "u1"}
    assert visible(both, {"site_id": 2, "owner_id": "u1"}, claims)
    assert not visible(both, {"site_id": 2, "owner_id": "u2"}, claims)
    assert visible([*both, [("org", "org_id")]], {"org": 7}, {**claims, "org_id": 7})


def test_a_filter_outside_the_list_is_not_admitted():
    claims = {"site_ids": [1, 2]}

    def admitted(value: object) -> bool:
        return filter_admitted(
            role="authenticated",
            policies=SITES,
            claims=claims,
            equalities={"site_id": value},
        )

    assert admitted(2) and admitted("1") and not admitted(3)


def test_claims_key_is_hashable_and_equal_only_for_equal_judgements():
    names = relevant_claims([*SITES, [("site_id", "site_id")]])
    a = claims_key(names, {"site_ids": [1, 2], "site_id": 5})
    assert a == claims_key(names, {"site_ids": ["2", 1, 1], "site_id": "5"})
    assert a != claims_key(names, {"site_ids": [1, 2, 3], "site_id": 5})
    assert a != claims_key(names, {"site_ids": [1], "site_id": 5})
    hash(claims_key(names, {"site_ids": [{"x": 1}], "site_id": {"$ne": 1}}))


@pytest.mark.parametrize(
    "rule, valid",
    [
        ({"column": "site_id", "claim": "site_ids", "any": True}, True),
        ({"column": "site_id", "claim": "site_ids", "any": False}, False),
        ({"column": "site_id", "claim": "site_ids", "any": "yes"}, False),
        ({"column": "site_id", "claim": "site_ids", "all": True}, False),
    ],
)
def test_membership_rules_are_validated(rule, valid):
    from django.core.exceptions import ValidationError

    from realtime.validators import validate_rules

    if valid:
        validate_rules([rule])
    else:
        with pytest.raises(ValidationError):
            validate_rules([rule])
