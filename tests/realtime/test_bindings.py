import copy
import subprocess
import sys
from pathlib import Path

import pytest

from realtime.bindings import (
    Binding,
    binding_id,
    binding_matches,
    join_reply_entries,
    parse_bindings,
)
from realtime.filters import MATCH_ALL, compile_filter
from realtime.row_policy import row_visible

REPO_ROOT = Path(__file__).resolve().parents[2]
JS_BINDING = {
    "event": "*",
    "schema": "public",
    "table": "live_updates",
    "filter": "site_id=eq.abc",
}


def one(params: dict) -> Binding:
    bindings, errors = parse_bindings([params])
    assert errors == []
    assert len(bindings) == 1
    return bindings[0]


def change(b: Binding, change_type="INSERT", table="live_updates", **rows) -> bool:
    return binding_matches(
        b,
        table=table,
        change_type=change_type,
        record=rows.get("record"),
        old_record=rows.get("old_record"),
    )


# --- parsing ---------------------------------------------------------------------


def test_js_binding_is_parsed():
    b = one(JS_BINDING)
    assert (b.event, b.schema, b.table) == ("*", "public", "live_updates")
    assert b.filter == compile_filter("site_id=eq.abc")
    assert b.raw == JS_BINDING
    assert b.error is None


@pytest.mark.parametrize(
    ("sent", "event"),
    [
        ("INSERT", "INSERT"),
        ("insert", "INSERT"),
        ("Update", "UPDATE"),
        ("delete", "DELETE"),
        ("*", "*"),
        ("TRUNCATE", "*"),
        ("", "*"),
        (None, "*"),
        (7, "*"),
    ],
)
def test_event_is_case_insensitive_and_unknown_means_all(sent, event):
    assert one({"event": sent, "schema": "public"}).event == event


def test_legacy_events_key_is_read():
    assert one({"events": "delete", "table": "t"}).event == "DELETE"
    assert one({"event": "INSERT", "events": "DELETE", "table": "t"}).event == "INSERT"
    assert one({"table": "t"}).event == "*"


def test_schema_only_means_every_table():
    b = one({"event": "*", "schema": "public"})
    assert (b.schema, b.table) == ("public", None)
    assert one({"schema": "public", "table": "*"}).table is None


def test_table_only_means_schema_public():
    b = one({"table": "todos"})
    assert (b.schema, b.table) == ("public", "todos")


def test_table_null_counts_as_absent():
    b = one({"events": "*", "schema": "public", "table": None})
    assert b.table is None


def test_neither_schema_nor_table_is_an_error():
    params = {"event": "*", "table": None, "filter": "id=eq.1"}
    bindings, errors = parse_bindings([params])
    assert errors == [
        "No subscription params provided. Please provide at least a `schema` or "
        '`table` to subscribe to: {"event": "*", "filter": "id=eq.1", "table": null}'
    ]
    # Still echoed, so the client's by-index comparison of the reply holds.
    assert [b.raw for b in bindings] == [params]
    assert bindings[0].error == errors[0]


def test_bad_filter_gives_the_filter_error_and_keeps_the_others():
    good = {"event": "*", "schema": "public", "table": "a"}
    bad = {"event": "*", "schema": "public", "table": "a", "filter": "foo=hey"}
    bindings, errors = parse_bindings([good, bad, good])
    assert errors == ['Error parsing `filter` params: ["foo", "hey"]']
    assert [b.error for b in bindings] == [None, errors[0], None]
    assert [entry["filter"] for entry in join_reply_entries(bindings)[1:2]] == [
        "foo=hey"
    ]


def test_refused_binding_never_matches_even_with_event_star():
    bindings, _ = parse_bindings([{"table": "a", "filter": "x=bogus.1"}])
    assert not change(bindings[0], table="a", record={"x": 1})


def test_non_string_filter_is_an_error():
    bindings, errors = parse_bindings([{"table": "a", "filter": 5}])
    assert errors == ["Error parsing `filter` params: 5"]
    assert bindings[0].error == errors[0]


@pytest.mark.parametrize("items", [None, {}, "x", 5, {"event": "*"}])
def test_non_list_gives_nothing(items):
    assert parse_bindings(items) == ([], [])


def test_empty_list_gives_nothing():
    assert parse_bindings([]) == ([], [])


def test_non_dict_items_are_reported_not_raised():
    bindings, errors = parse_bindings(["public", None, 3, [1], {"table": "t"}])
    assert [b.table for b in bindings] == ["t"]
    assert len(errors) == 4
    assert all(e.startswith("No subscription params provided.") for e in errors)
    assert errors[0].endswith(': "public"')


def test_parse_never_raises_on_odd_values():
    odd = [{"schema": 1, "table": {"x": 1}, "filter": ["a"], "event": object()}]
    bindings, errors = parse_bindings(odd)
    assert len(bindings) == 1
    assert len(errors) == 1


# --- ids -------------------------------------------------------------------------


def test_id_is_stable_between_calls_and_key_order():
    reordered = dict(reversed(list(JS_BINDING.items())))
    assert binding_id(JS_BINDING) == binding_id(dict(JS_BINDING))
    assert binding_id(JS_BINDING) == binding_id(reordered)
    assert one(JS_BINDING).id == binding_id(JS_BINDING)


def test_id_is_stable_across_processes():
    # hash() is salted per process; ids must agree between server processes.
    code = (
        "from realtime.bindings import binding_id;"
        "print(binding_id({'event':'*','schema':'public','table':'live_updates',"
        "'filter':'site_id=eq.abc'}))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO_ROOT,
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO_ROOT)},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert outputs == {str(binding_id(JS_BINDING))}


def test_id_is_a_truthy_int_in_range():
    for i in range(2000):
        value = binding_id({"table": f"t{i}", "filter": f"id=eq.{i}"})
        assert type(value) is int
        assert 1 <= value <= 2**27 - 1


def test_id_is_never_zero_even_for_a_zero_digest(monkeypatch):
    class ZeroDigest:
        def __init__(self, *args, **kwargs):
            pass

        def digest(self) -> bytes:
            return bytes(8)

    monkeypatch.setattr("realtime.bindings.hashlib.blake2b", ZeroDigest)
    assert binding_id({"table": "t"}) == 1


def test_different_params_get_different_ids():
    ids = {binding_id({"table": "t", "filter": f"id=eq.{i}"}) for i in range(200)}
    assert len(ids) == 200
    assert binding_id({"event": "*", "table": "t"}) != binding_id({"table": "t"})


# --- join reply ------------------------------------------------------------------


def test_reply_echoes_verbatim_plus_id_in_order():
    sent = [
        JS_BINDING,
        {"events": "*", "schema": "public", "table": None},
        {"event": "insert", "table": "todos"},
    ]
    original = copy.deepcopy(sent)
    bindings, errors = parse_bindings(sent)
    assert errors == []
    entries = join_reply_entries(bindings)
    assert [{k: v for k, v in e.items() if k != "id"} for e in entries] == original
    assert [e["id"] for e in entries] == [b.id for b in bindings]
    # Nothing was added: no `event` for the legacy client, no `schema`, no upcasing.
    assert "event" not in entries[1]
    assert entries[1]["table"] is None
    assert entries[2]["event"] == "insert"
    assert "schema" not in entries[2]
    assert sent == original


def test_reply_for_no_bindings_is_empty():
    assert join_reply_entries([]) == []


# --- matching --------------------------------------------------------------------


def test_event_must_match():
    b = one({"event": "UPDATE", "table": "t"})
    assert change(b, "UPDATE", "t", record={"id": 1})
    assert not change(b, "INSERT", "t", record={"id": 1})
    assert not change(b, "DELETE", "t", old_record={"id": 1})


def test_star_matches_every_event():
    b = one({"event": "*", "table": "t"})
    assert change(b, "INSERT", "t", record={})
    assert change(b, "UPDATE", "t", record={}, old_record={})
    assert change(b, "DELETE", "t", old_record={})


def test_table_must_match_unless_all_tables():
    assert not change(one({"table": "t"}), table="other", record={})
    assert change(one({"schema": "public"}), table="other", record={})


def test_other_schemas_never_match():
    assert not change(one({"schema": "private"}), table="t", record={})
    assert not change(one({"schema": "private", "table": "t"}), table="t", record={})


def test_filter_reads_record_for_insert_and_update():
    b = one({"table": "t", "filter": "site_id=eq.1"})
    assert change(b, "INSERT", "t", record={"site_id": 1})
    assert not change(b, "INSERT", "t", record={"site_id": 2})
    # An UPDATE is judged on the new row, not the old one.
    assert change(b, "UPDATE", "t", record={"site_id": 1}, old_record={"site_id": 2})
    assert not change(
        b, "UPDATE", "t", record={"site_id": 2}, old_record={"site_id": 1}
    )


def test_filter_reads_old_record_for_delete():
    b = one({"table": "t", "filter": "site_id=eq.1"})
    assert change(b, "DELETE", "t", old_record={"site_id": 1})
    assert not change(b, "DELETE", "t", old_record={"site_id": 2})
    assert not change(b, "DELETE", "t", record={"site_id": 1}, old_record=None)


def test_no_filter_matches_any_row():
    b = one({"table": "t"})
    assert b.filter == MATCH_ALL
    assert change(b, "DELETE", "t", old_record=None)


def test_filter_cannot_widen_a_row_policy():
    # The filter asks for site 2; the policy allows only the claim's site 1.
    b = one({"table": "t", "filter": "site_id=eq.2"})
    row = {"site_id": 2}
    policies = [[("site_id", "site_id")]]
    claims = {"site_id": "1"}
    assert change(b, "INSERT", "t", record=row)
    assert not row_visible(role="anon", policies=policies, row=row, claims=claims)


def test_identical_bindings_are_equal():
    a, b = parse_bindings([JS_BINDING, dict(JS_BINDING)])[0]
    assert a == b
    assert len({a, b}) == 1


def test_unable_message_renders_params_as_supabase_does() -> None:
    """Supabase's text names the filters and `select` (nil when absent)."""
    params = {"event": "INSERT", "schema": "public", "table": "a b", "filter": "x=eq.1"}
    _, errors = parse_bindings([params])
    assert errors == [
        "Unable to subscribe to changes with given parameters. Please check Realtime "
        "is enabled for the given connect parameters: [event: INSERT, schema: public, "
        'table: a b, filters: [{"x", "eq", "1", false}], select: nil]'
    ]
