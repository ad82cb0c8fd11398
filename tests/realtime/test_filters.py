import pytest

from realtime.filters import MATCH_ALL, FilterError, compile_filter


def matches(text: str, record: dict | None) -> bool:
    return compile_filter(text).matches(record)


def error_of(text: str) -> str:
    with pytest.raises(FilterError) as info:
        compile_filter(text)
    return str(info.value)


# --- empty filters ---------------------------------------------------------------


@pytest.mark.parametrize("text", [None, ""])
def test_empty_filter_matches_everything(text):
    compiled = compile_filter(text)
    assert compiled is MATCH_ALL
    assert compiled.matches({"anything": 1})
    assert compiled.matches({})
    assert compiled.matches(None)
    assert compiled.columns == frozenset()


# --- every op on every type ------------------------------------------------------

OPS_ON_INTS = [
    ("eq", "5", [5], [4, 6]),
    ("neq", "5", [4, 6], [5]),
    ("lt", "5", [4, -10], [5, 6]),
    ("lte", "5", [4, 5], [6]),
    ("gt", "5", [6, 100], [5, 4]),
    ("gte", "5", [5, 6], [4]),
    ("in", "(1,5,9)", [1, 5, 9], [2, 10]),
]


@pytest.mark.parametrize(("op", "value", "hits", "misses"), OPS_ON_INTS)
def test_ops_on_ints_compare_numerically(op, value, hits, misses):
    compiled = compile_filter(f"n={op}.{value}")
    assert [compiled.matches({"n": v}) for v in hits] == [True] * len(hits)
    assert [compiled.matches({"n": v}) for v in misses] == [False] * len(misses)


def test_ints_compare_numerically_not_as_text():
    # As text "10" < "9"; as numbers it is not.
    assert matches("n=gt.9", {"n": 10})
    assert not matches("n=lt.9", {"n": 10})


OPS_ON_FLOATS = [
    ("eq", "1.5", [1.5], [1.25, 2]),
    ("neq", "1.5", [1.25, 2], [1.5]),
    ("lt", "1.5", [1.25, 1], [1.5, 2.0]),
    ("lte", "1.5", [1.5, 1], [1.75]),
    ("gt", "1.5", [1.75, 2], [1.5, 1]),
    ("gte", "1.5", [1.5, 2], [1.25]),
    ("in", "(0.5,1.5)", [0.5, 1.5], [1.0, 2.5]),
]


@pytest.mark.parametrize(("op", "value", "hits", "misses"), OPS_ON_FLOATS)
def test_ops_on_floats_compare_numerically(op, value, hits, misses):
    compiled = compile_filter(f"x={op}.{value}")
    assert [compiled.matches({"x": v}) for v in hits] == [True] * len(hits)
    assert [compiled.matches({"x": v}) for v in misses] == [False] * len(misses)


def test_int_and_float_are_the_same_number():
    assert matches("n=eq.1.0", {"n": 1})
    assert matches("n=eq.1", {"n": 1.0})
    assert matches("n=in.(1.0,2)", {"n": 1})
    assert matches("n=gt.1e2", {"n": 101})


@pytest.mark.parametrize("value", ["abc", "1_000", "nan", "inf", "0x10", "", "\u0661"])
@pytest.mark.parametrize("op", ["eq", "neq", "lt", "lte", "gt", "gte"])
def test_non_number_against_a_number_never_matches(op, value):
    for record in ({"n": 1000}, {"n": 16.0}, {"n": 1}, {"n": 0}):
        assert not matches(f"n={op}.{value}", record)


OPS_ON_STRINGS = [
    ("eq", "abc", ["abc"], ["ABC", "abcd", ""]),
    ("neq", "abc", ["ABC", "x"], ["abc"]),
    ("lt", "m", ["a", "l"], ["m", "z"]),
    ("lte", "m", ["a", "m"], ["n"]),
    ("gt", "m", ["n", "z"], ["m", "a"]),
    ("gte", "m", ["m", "z"], ["l"]),
    ("in", "(a,b c,d)", ["a", "b c", "d"], ["b", "c", "e"]),
]


@pytest.mark.parametrize(("op", "value", "hits", "misses"), OPS_ON_STRINGS)
def test_ops_on_strings_compare_as_text(op, value, hits, misses):
    compiled = compile_filter(f"s={op}.{value}")
    assert [compiled.matches({"s": v}) for v in hits] == [True] * len(hits)
    assert [compiled.matches({"s": v}) for v in misses] == [False] * len(misses)


def test_numeric_looking_strings_compare_as_text():
    # A text column holding "10" is compared as text, as Postgres would.
    assert matches("s=lt.9", {"s": "10"})
    assert not matches("s=eq.1.0", {"s": "1"})


def test_iso_timestamps_order_as_text():
    compiled = compile_filter("at=gte.2025-01-01T00:00:00Z")
    assert compiled.matches({"at": "2025-06-01T12:00:00Z"})
    assert not compiled.matches({"at": "2024-12-31T23:59:59Z"})


def test_value_keeps_dots_and_equals_after_the_first_split():
    assert matches("email=eq.a.b=c@x.org", {"email": "a.b=c@x.org"})


@pytest.mark.parametrize("text", ["true", "TRUE", "t", "T", "True"])
def test_bool_true_spellings(text):
    assert matches(f"b=eq.{text}", {"b": True})
    assert not matches(f"b=eq.{text}", {"b": False})
    assert matches(f"b=neq.{text}", {"b": False})


@pytest.mark.parametrize("text", ["false", "FALSE", "f", "F"])
def test_bool_false_spellings(text):
    assert matches(f"b=eq.{text}", {"b": False})
    assert not matches(f"b=eq.{text}", {"b": True})


@pytest.mark.parametrize("text", ["1", "0", "yes", "", "truth"])
@pytest.mark.parametrize("op", ["eq", "neq"])
def test_bool_needs_a_bool_value(op, text):
    assert not matches(f"b={op}.{text}", {"b": True})
    assert not matches(f"b={op}.{text}", {"b": False})


def test_bool_order_and_in():
    assert matches("b=lt.true", {"b": False})
    assert not matches("b=lt.false", {"b": True})
    assert matches("b=gte.false", {"b": True})
    assert matches("b=in.(t)", {"b": True})
    assert not matches("b=in.(t)", {"b": False})
    # A number 1 in the row is not the boolean true.
    assert not matches("n=eq.true", {"n": 1})
    assert not matches("n=in.(1)", {"n": True})


@pytest.mark.parametrize("op", ["eq", "neq", "lt", "lte", "gt", "gte"])
def test_null_and_missing_never_match(op):
    compiled = compile_filter(f"c={op}.1")
    assert not compiled.matches({"c": None})
    assert not compiled.matches({})
    assert not compiled.matches({"other": 1})
    assert not compiled.matches(None)


def test_null_never_matches_in_or_the_text_null():
    assert not matches("c=in.(1,null)", {"c": None})
    assert not matches("c=eq.null", {"c": None})
    assert not matches("c=neq.null", {"c": None})


def test_json_values_compare_by_json_equality():
    assert matches('meta=eq.{ "a" : [1] }', {"meta": {"a": [1]}})
    assert not matches('meta=eq.{"a":[2]}', {"meta": {"a": [1]}})
    assert matches('meta=neq.{"a":[2]}', {"meta": {"a": [1]}})
    assert matches("tags=eq.[ 1 ]", {"tags": [1]})
    assert not matches("tags=eq.[1]", {"tags": [True]})
    assert matches('tags=neq."x"', {"tags": [1]})
    assert not matches("meta=eq.not json", {"meta": {}})
    assert not matches("meta=neq.not json", {"meta": {}})
    assert not matches("meta=gt.{}", {"meta": {"a": 1}})
    assert not matches("tags=in.([1])", {"tags": [1]})


def test_commas_in_json_values_split_conditions():
    # Only `in.(…)` lists hold commas; the rest of a JSON value is another condition.
    assert error_of('meta=eq.{"a":1,"b":2}') == (
        'Error parsing `filter` params: ["\\"b\\":2}"]'
    )


# --- `in` ------------------------------------------------------------------------


def test_in_trims_and_unquotes_like_a_postgres_array_literal():
    assert matches('s=in.( a , "b" )', {"s": "a"})
    assert matches('s=in.( a , "b" )', {"s": "b"})
    assert not matches('s=in.( a , "b" )', {"s": '"b"'})


def test_empty_in_matches_nothing():
    assert not matches("s=in.()", {"s": ""})
    assert not matches("n=in.()", {"n": 0})


def test_in_accepts_100_values():
    values = ",".join(str(i) for i in range(100))
    compiled = compile_filter(f"n=in.({values})")
    assert compiled.matches({"n": 99})
    assert not compiled.matches({"n": 100})


def test_in_refuses_101_values():
    values = ",".join(str(i) for i in range(101))
    assert error_of(f"n=in.({values})") == (
        "too many values for `in` filter. Maximum 100"
    )


@pytest.mark.parametrize("value", ["1,2", "(1,2", "1,2)", "[1,2]", "", "(", "1"])
def test_unwrapped_in_is_refused(value):
    assert error_of(f"n=in.{value}") == (
        "Error parsing `filter` params: `in` filter value must be wrapped by "
        "parentheses"
    )


# --- several conditions ----------------------------------------------------------


def test_comma_conditions_are_all_required():
    compiled = compile_filter("id=gt.0,id=lt.100,name=eq.x")
    assert compiled.matches({"id": 50, "name": "x"})
    assert not compiled.matches({"id": 150, "name": "x"})
    assert not compiled.matches({"id": 50, "name": "y"})
    assert not compiled.matches({"id": 50})
    assert compiled.columns == frozenset({"id", "name"})


def test_same_column_twice_requires_both_not_either():
    compiled = compile_filter("site_id=eq.1,site_id=eq.2")
    assert not compiled.matches({"site_id": 1})
    assert not compiled.matches({"site_id": 2})


def test_commas_inside_in_do_not_split_conditions():
    compiled = compile_filter("site_id=in.(1,2),kind=eq.a,tag=in.(x,y)")
    assert compiled.matches({"site_id": 2, "kind": "a", "tag": "y"})
    assert not compiled.matches({"site_id": 3, "kind": "a", "tag": "y"})
    assert not compiled.matches({"site_id": 2, "kind": "a", "tag": "z"})
    assert compiled.columns == frozenset({"site_id", "kind", "tag"})


def test_a_comma_never_smuggles_a_wider_condition_out_of_in():
    # The `in` list ends at its `)`; junk after it spoils the condition.
    assert error_of("n=in.(1,2)x,n=eq.3").startswith("Error parsing")


@pytest.mark.parametrize("text", ["a=eq.1,", ",a=eq.1", "a=eq.1,,b=eq.2"])
def test_empty_condition_is_refused(text):
    assert error_of(text) == 'Error parsing `filter` params: [""]'


# --- refused filters -------------------------------------------------------------


def test_unknown_op_has_supabase_text():
    assert error_of("foo=hey") == 'Error parsing `filter` params: ["foo", "hey"]'
    assert error_of("id=regex.1") == 'Error parsing `filter` params: ["id", "regex.1"]'
    assert error_of("id=EQ.1") == 'Error parsing `filter` params: ["id", "EQ.1"]'
    assert error_of("id=not.not.eq.1").startswith("Error parsing `filter` params")


def test_missing_equals_is_refused():
    assert error_of("site_id") == 'Error parsing `filter` params: ["site_id"]'


def test_error_in_a_later_condition_refuses_the_whole_filter():
    assert error_of("id=eq.1,x=bogus.2") == (
        'Error parsing `filter` params: ["x", "bogus.2"]'
    )


@pytest.mark.parametrize(
    "column",
    [
        '"site_id"',
        "site id",
        "site_id ",
        "site_id\n",
        "site_id;drop table x",
        "site_id)or(1",
        "1site",
        "",
        "a.b",
        "site_id'--",
        "sïte",
    ],
)
def test_column_must_be_a_plain_identifier(column):
    message = error_of(f"{column}=eq.1")
    assert message.startswith("Error parsing `filter` params: [")


def test_filter_error_is_a_value_error():
    assert issubclass(FilterError, ValueError)


# --- identity --------------------------------------------------------------------


def test_identical_filters_are_equal_and_hash_alike():
    one = compile_filter("b=eq.2,a=in.(2,1)")
    other = compile_filter("a=in.(1,2),b=eq.2")
    assert one == other
    assert len({one, other}) == 1


def test_different_filters_differ():
    assert compile_filter("a=eq.1") != compile_filter("a=eq.2")
    assert compile_filter("a=eq.1") != compile_filter("a=neq.1")
    assert compile_filter("a=eq.1") != compile_filter("b=eq.1")
    assert compile_filter("a=eq.1") != MATCH_ALL


# --- PostgREST's other operators and `not.` --------------------------------------

NEW_OPS = [
    # (filter, records that match, records that do not)
    ("t=like.foo%", [{"t": "foo"}, {"t": "foobar"}], [{"t": "xfoo"}, {"t": 1}, {}]),
    ("t=like.foo*", [{"t": "foobar"}], [{"t": "Foobar"}]),
    ("t=like.a_c", [{"t": "abc"}], [{"t": "ac"}, {"t": "abbc"}]),
    ("t=like.50\\%", [{"t": "50%"}], [{"t": "500"}]),
    ("t=ilike.FOO%", [{"t": "foobar"}, {"t": "FOO"}], [{"t": "bar"}]),
    ("d=is.null", [{"d": None}, {}], [{"d": 0}, {"d": False}, {"d": ""}]),
    ("d=is.unknown", [{"d": None}], [{"d": True}]),
    ("d=is.true", [{"d": True}], [{"d": 1}, {"d": None}, {"d": False}]),
    ("d=is.false", [{"d": False}], [{"d": 0}, {"d": None}]),
    ("t=match.^a.c$", [{"t": "abc"}, {"t": "a\nc"}], [{"t": "xabc"}, {"t": 5}]),
    ("t=match.b", [{"t": "abc"}], [{"t": "ABC"}]),
    ("t=imatch.^A", [{"t": "abc"}, {"t": "ABC"}], [{"t": "bac"}]),
    ("id=isdistinct.5", [{"id": 4}, {"id": None}, {}], [{"id": 5}]),
    ("id=not.eq.5", [{"id": 4}], [{"id": 5}, {"id": None}, {}]),
    ("id=not.in.(1,2)", [{"id": 3}], [{"id": 1}, {"id": None}]),
    ("d=not.is.null", [{"d": 0}], [{"d": None}, {}]),
    ("id=not.isdistinct.5", [{"id": 5}], [{"id": 4}, {}]),
    ("t=not.like.a%", [{"t": "ba"}], [{"t": "ab"}, {"t": None}]),
    ("id=not.in.(1,2),t=ilike.*X*", [{"id": 3, "t": "axb"}], [{"id": 1, "t": "x"}]),
]


@pytest.mark.parametrize(("text", "hits", "misses"), NEW_OPS)
def test_postgrest_operators_and_negation(text, hits, misses):
    for record in hits:
        assert matches(text, record), record
    for record in misses:
        assert not matches(text, record), record


def test_a_negated_filter_is_not_the_plain_one():
    assert compile_filter("id=not.eq.5") != compile_filter("id=eq.5")
    assert compile_filter("a=eq.1,b=not.eq.2") == compile_filter("b=not.eq.2,a=eq.1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("t=match.(", "invalid regular expression: missing ): ("),
        ("t=match.(a{1000}){1000}", "invalid regular expression"),
        ("d=is.maybe", "`is` takes null, true, false or unknown"),
        ("id=not.zz.5", 'Error parsing `filter` params: ["id", "not.zz.5"]'),
    ],
)
def test_bad_operator_values_are_refused_with_the_reason(text, message):
    assert message in error_of(text)


def test_a_hostile_regular_expression_takes_linear_time():
    # (a+)+$ against a long run of a's then b: exponential for a backtracking
    # engine, one pass for RE2. Evaluated once here: a backtracking engine
    # would not return within the test's timeout.
    hostile = compile_filter("t=match.(a+)+$")
    assert not hostile.matches({"t": "a" * 200_000 + "b"})
