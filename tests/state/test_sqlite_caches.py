"""The SQLite backend's read caches: what each invalidation point makes them forget or learn."""

from __future__ import annotations

import sqlite3

from superlink_async.state.sqlite.caches import RUN_ROWS_KEPT, ReadCaches


def a_row(run_id: int) -> sqlite3.Row:
    with sqlite3.connect(":memory:") as db:
        db.row_factory = sqlite3.Row
        row: sqlite3.Row = db.execute("SELECT ? AS run_id", (run_id,)).fetchone()
    db.close()
    return row


def test_a_node_has_instructions_from_their_storing_until_a_pull_drains_it() -> None:
    caches = ReadCaches([5])
    assert caches.may_have_instructions(5)
    assert not caches.may_have_instructions(6)
    caches.instruction_stored(6)
    assert caches.may_have_instructions(6)
    caches.node_drained(6)
    caches.node_drained(7)  # a node with nothing recorded: nothing to forget
    assert not caches.may_have_instructions(6)
    assert caches.may_have_instructions(5)


def test_a_changed_run_is_forgotten_alone_and_runs_changed_forgets_all() -> None:
    caches = ReadCaches([])
    caches.run_read(1, a_row(1))
    caches.run_read(2, a_row(2))
    caches.run_changed(1)
    assert caches.run_row(1) is None
    assert caches.run_row(2) is not None
    caches.runs_changed()
    assert caches.run_row(2) is None


def test_run_rows_are_bounded_by_forgetting_them_all() -> None:
    caches = ReadCaches([])
    for run_id in range(RUN_ROWS_KEPT):
        caches.run_read(run_id, a_row(run_id))
    assert caches.run_row(0) is not None
    caches.run_read(RUN_ROWS_KEPT, a_row(RUN_ROWS_KEPT))
    assert caches.run_row(0) is None
    assert caches.run_row(RUN_ROWS_KEPT) is not None


def test_any_binding_change_forgets_every_binding() -> None:
    caches = ReadCaches([])
    caches.binding_read(b"a", 10)
    caches.binding_read(b"b", 11)
    assert caches.node_of_key(b"a") == 10
    caches.bindings_changed()
    assert caches.node_of_key(b"a") is None
    assert caches.node_of_key(b"b") is None
