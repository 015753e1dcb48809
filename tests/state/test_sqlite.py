"""Behaviour only the SQLite backend has: files, reopening, schema versions, int64 storage.

The behaviour shared with the in-memory backend is pinned by ``test_linkstate.py``.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from superlink_async.state import rules
from superlink_async.state.base import (
    PENDING,
    RUNNING,
    SUPERLINK_NODE_ID,
    DatabaseCorruptError,
    RunStatus,
    SchemaVersionError,
    StateError,
)
from superlink_async.state.sqlite import SCHEMA_VERSION, SqliteLinkState
from superlink_async.testing.clock import FakeClock
from superlink_async.wire import run_pb2
from superlink_async.wire.message_pb2 import Context, Message, Metadata
from superlink_async.wire.recorddict_pb2 import ConfigRecord, ConfigRecordValue, RecordDict
from superlink_async.wire.transport_pb2 import Scalar
from tests.state.conftest import corrupt_a_page
from tests.state.test_linkstate import REPLICA

pytestmark = pytest.mark.anyio

TTL = 600.0


@asynccontextmanager
async def opened(database: str | Path, clock: FakeClock) -> AsyncIterator[SqliteLinkState]:
    state = await SqliteLinkState.open(str(database), clock=clock)
    try:
        yield state
    finally:
        await state.aclose()


def instruction(run_id: int, node_id: int, clock: FakeClock, group: str = "g") -> Message:
    return Message(
        metadata=Metadata(
            run_id=run_id,
            src_node_id=SUPERLINK_NODE_ID,
            dst_node_id=node_id,
            group_id=group,
            message_type="train",
            created_at=clock(),
            ttl=TTL,
        ),
        content=RecordDict(),
    )


def reply(to: Message, clock: FakeClock) -> Message:
    return Message(
        metadata=Metadata(
            run_id=to.metadata.run_id,
            src_node_id=to.metadata.dst_node_id,
            dst_node_id=SUPERLINK_NODE_ID,
            reply_to_message_id=to.metadata.message_id,
            group_id=to.metadata.group_id,
            message_type=to.metadata.message_type,
            created_at=clock(),
            ttl=TTL / 2,
        ),
        content=RecordDict(),
    )


def pragma(path: Path, name: str) -> object:
    """Read a pragma with a plain sqlite3 connection, independent of the backend."""
    with sqlite3.connect(path) as db:
        value: object = db.execute(f"PRAGMA {name}").fetchone()[0]
    db.close()
    return value


async def test_memory_database_is_one_connection_shared_by_every_call(clock: FakeClock) -> None:
    """``:memory:`` keeps its data between calls (the reference opened a new DB per call)."""
    async with opened(":memory:", clock) as state:
        run_id = await state.create_run("a", "1", "", {}, ConfigRecord())
        node_id = await state.create_node(ping_interval=30.0)
        claimed = await state.claim_pending_run(REPLICA)
        assert claimed is not None
        assert claimed.run_id == run_id
        assert await state.update_run_status(run_id, RunStatus(RUNNING))
        assert await state.get_online_nodes() == [node_id]
        assert await state.get_serverapp_context(run_id) == Context(run_id=run_id)


async def test_each_memory_database_is_private(clock: FakeClock) -> None:
    """Two ``:memory:`` states (e.g. two test servers) never see each other's data."""
    async with opened(":memory:", clock) as first, opened(":memory:", clock) as second:
        await first.create_run("a", "1", "", {}, ConfigRecord())
        assert await second.get_runs() == []


async def test_fresh_file_gets_our_schema_version_and_wal(tmp_path: Path, clock: FakeClock) -> None:
    """A new file is stamped with ``SCHEMA_VERSION`` and uses WAL journaling."""
    path = tmp_path / "state.db"
    async with opened(path, clock):
        assert pragma(path, "journal_mode") == "wal"
    assert pragma(path, "user_version") == SCHEMA_VERSION
    assert pragma(path, "journal_mode") == "wal"  # persistent in the file


SCHEMA_V2 = Path(__file__).with_name("schema_v2.sql")
SCHEMA_V3 = Path(__file__).with_name("schema_v3.sql")


def schema_statements(path: Path) -> list[str]:
    """A file's tables and indexes as ``schema_v3.sql`` writes them: comments out, space folded."""
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
            "ORDER BY type, name"
        ).fetchall()
    db.close()
    statements = []
    for (sql,) in rows:
        folded = " ".join(re.sub(r"--[^\n]*", "", sql).split())
        folded = folded.replace("( ", "(").replace(" )", ")").replace(" ,", ",")
        statements.append(folded + ";")
    return statements


def golden_statements(golden: Path = SCHEMA_V3) -> list[str]:
    lines = golden.read_text().splitlines()
    return [line for line in lines if line and not line.startswith("--")]


async def test_a_fresh_file_has_the_tables_files_on_disk_already_have(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The schema of version 3 is the one deployed files hold; changing it needs version 4."""
    assert SCHEMA_VERSION == 3
    path = tmp_path / "state.db"
    async with opened(path, clock):
        pass
    assert schema_statements(path) == golden_statements()


async def test_a_version_2_file_written_without_this_code_migrates_and_reads(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Rows laid out as version-2 files on disk have them (signed int64 ids, serialized
    protobufs) read back as they were stored, after the file is migrated to version 3: its
    runs have no owner, so one left running is failed when a replica registers."""
    path = tmp_path / "state.db"
    node_id, run_id = 2**64 - 5, 2**63 + 7  # stored as negative int64
    override = run_pb2.Run()
    override.override_config["lr"].CopyFrom(Scalar(double=0.5))
    options = ConfigRecord(data={"rounds": ConfigRecordValue(sint64=3)})
    content = RecordDict(configs={"cfg": ConfigRecord(data={"x": ConfigRecordValue(bool=True)})})
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA page_size = 16384")
        tables_first = sorted(
            golden_statements(SCHEMA_V2), key=lambda sql: "INDEX" in sql.split("(")[0]
        )
        for statement in tables_first:
            db.execute(statement)
        db.execute(
            "INSERT INTO run (run_id, fab_id, fab_version, fab_hash, override_config, "
            "federation_options, pending_at, starting_at, running_at, finished_at, status, "
            "sub_status, details) VALUES (?, 'flwr/app', '1.0', 'abc', ?, ?, "
            "'2025-06-15T15:06:40+00:00', '', '', '', 'pending', '', '')",
            (run_id - 2**64, override.SerializeToString(), options.SerializeToString()),
        )
        db.execute(
            "INSERT INTO run (run_id, fab_id, fab_version, fab_hash, override_config, "
            "federation_options, pending_at, starting_at, running_at, finished_at, status, "
            "sub_status, details) VALUES (77, 'flwr/app', '1.0', 'abc', ?, ?, "
            "'2025-06-15T15:06:41+00:00', 'x', 'x', '', 'running', '', '')",
            (override.SerializeToString(), options.SerializeToString()),
        )
        db.execute(
            "INSERT INTO context (run_id, context) VALUES (?, ?)",
            (run_id - 2**64, Context(run_id=run_id).SerializeToString()),
        )
        db.execute(
            "INSERT INTO node (node_id, online_until, ping_interval, public_key) "
            "VALUES (?, ?, 30.0, ?)",
            (node_id - 2**64, clock() + 30.0, b"node-key"),
        )
        db.execute(
            "INSERT INTO message_ins (message_id, run_id, src_node_id, dst_node_id, "
            "reply_to_message_id, group_id, message_type, created_at, ttl) "
            "VALUES ('ins-1', ?, 1, ?, '', 'g', 'train', ?, 600.0)",
            (run_id - 2**64, node_id - 2**64, clock()),
        )
        db.execute(
            "INSERT INTO message_ins_payload (seq, content, error) "
            "VALUES (last_insert_rowid(), ?, NULL)",
            (content.SerializeToString(),),
        )
        db.execute("PRAGMA user_version = 2")
    db.close()

    async with opened(path, clock) as state:
        run = await state.get_run(run_id)
        assert run is not None
        assert (run.fab_id, run.fab_version, run.fab_hash) == ("flwr/app", "1.0", "abc")
        assert run.override_config == {"lr": 0.5}
        assert run.pending_at == "2025-06-15T15:06:40+00:00"
        assert run.status == RunStatus(PENDING)
        assert await state.get_federation_options(run_id) == options
        assert await state.get_serverapp_context(run_id) == Context(run_id=run_id)
        assert await state.get_online_nodes() == [node_id]
        assert await state.get_node_id(b"node-key") == node_id
        assert await state.has_instructions_waiting(node_id)
        [pulled] = await state.pull_message_ins(node_id)
        assert pulled.metadata.message_id == "ins-1"
        assert (pulled.metadata.run_id, pulled.metadata.dst_node_id) == (run_id, node_id)
        assert pulled.content == content
        assert [run.owner for run in await state.get_runs()] == ["", ""]
        assert await state.register_replica(REPLICA, 10.0, "restarted") == [77]
        assert await state.reserve_pending_run(REPLICA) == run_id
    assert pragma(path, "user_version") == SCHEMA_VERSION
    assert schema_statements(path) == golden_statements()


async def test_newer_schema_version_is_refused_naming_file_and_versions(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A file from a newer release raises, says which file and versions, and is left alone."""
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE something (x)")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()

    with pytest.raises(SchemaVersionError) as caught:
        await SqliteLinkState.open(str(path), clock=clock)

    text = str(caught.value)
    assert str(path) in text
    assert f"schema version {SCHEMA_VERSION + 1}" in text
    assert f"expects version {SCHEMA_VERSION}" in text
    assert pragma(path, "journal_mode") == "delete"  # not switched to WAL behind its back
    assert pragma(path, "user_version") == SCHEMA_VERSION + 1


def downgrade_to_schema_1(path: Path) -> None:
    """Give a file the shape schema version 1 had: instructions kept their payload inline,
    runs had no owner nor reservation, replicas no leases."""
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE run DROP COLUMN owner")
        db.execute("ALTER TABLE run DROP COLUMN reserved_by")
        db.execute("DROP TABLE replica")
        db.execute("ALTER TABLE message_ins ADD COLUMN content BLOB")
        db.execute("ALTER TABLE message_ins ADD COLUMN error BLOB")
        db.execute(
            "UPDATE message_ins SET (content, error) = (SELECT content, error "
            "FROM message_ins_payload AS p WHERE p.seq = message_ins.seq)"
        )
        db.execute("DROP TABLE message_ins_payload")
        db.execute("PRAGMA user_version = 1")
    db.close()


async def test_schema_1_file_is_migrated_keeping_every_message(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A file of schema 1 is brought to the current version; its messages come out intact."""
    path = tmp_path / "state.db"
    async with opened(path, clock) as state:
        node_id = await state.create_node(ping_interval=30.0)
        run_id = await state.create_run("a", "1", "", {}, ConfigRecord())
        waiting = instruction(run_id, node_id, clock, group="waiting")
        waiting.content.configs["cfg"].data["lr"].double = 0.5
        answered = instruction(run_id, node_id, clock, group="answered")
        answered.metadata.message_id = await state.store_message_ins(answered)
        await state.pull_message_ins(node_id)
        waiting.metadata.message_id = await state.store_message_ins(waiting)
        answer = reply(answered, clock)
        answer.metadata.message_id = await state.store_message_res(answer)
    downgrade_to_schema_1(path)

    async with opened(path, clock) as state:
        assert await state.pull_message_ins(node_id) == [waiting]
        assert await state.take_replies(run_id, [answered.metadata.message_id]) == [answer]

    assert pragma(path, "user_version") == SCHEMA_VERSION
    with sqlite3.connect(path) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(message_ins)")}
    db.close()
    assert "content" not in columns


async def test_new_file_uses_16_kib_pages(tmp_path: Path, clock: FakeClock) -> None:
    """Payloads span fewer overflow pages (each read and freed one at a time)."""
    path = tmp_path / "state.db"
    async with opened(path, clock):
        pass
    assert pragma(path, "page_size") == 16384


async def test_unversioned_database_with_tables_is_refused(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A SQLite file we did not create (e.g. flwr's own state.db) is not silently adopted."""
    path = tmp_path / "flwr.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE run (run_id INTEGER UNIQUE)")
    db.close()

    with pytest.raises(SchemaVersionError, match=r"schema version 0 \(not created by"):
        await SqliteLinkState.open(str(path), clock=clock)


async def test_garbage_file_is_a_clear_state_error(tmp_path: Path, clock: FakeClock) -> None:
    """A file that is not SQLite gives a ``StateError`` naming it, not a raw traceback."""
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is certainly not a database\n" * 200)

    with pytest.raises(StateError, match=r"garbage\.db") as caught:
        await SqliteLinkState.open(str(path), clock=clock)

    assert not isinstance(caught.value, SchemaVersionError)
    assert "not a database" in str(caught.value)


async def test_unopenable_path_is_a_clear_state_error(tmp_path: Path, clock: FakeClock) -> None:
    """A file in a missing directory gives a ``StateError`` naming it."""
    path = tmp_path / "missing-dir" / "state.db"
    with pytest.raises(StateError, match="missing-dir"):
        await SqliteLinkState.open(str(path), clock=clock)


@pytest.fixture
def huge_ids(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Make the next node and run ids uint64 values with the top bit set."""
    ids = [2**64 - 2, 2**63, 2**64 - 1]
    node_ids = iter(ids[:2])
    monkeypatch.setattr(rules, "new_node_id", lambda: next(node_ids))
    monkeypatch.setattr(rules, "new_run_id", lambda: ids[2])
    yield ids


async def test_uint64_ids_above_2_63_round_trip(
    tmp_path: Path, clock: FakeClock, huge_ids: list[int]
) -> None:
    """Ids stored as signed int64 come back as the same uint64, in unsigned order."""
    path = tmp_path / "state.db"
    async with opened(path, clock) as state:
        first = await state.create_node(ping_interval=30.0)
        second = await state.create_node(ping_interval=30.0)
        run_id = await state.create_run("a", "1", "", {}, ConfigRecord())
        assert [first, second, run_id] == huge_ids
        sent = instruction(run_id, first, clock)
        sent.metadata.message_id = await state.store_message_ins(sent)

    with sqlite3.connect(path) as db:
        assert db.execute("SELECT run_id FROM run").fetchone()[0] == -1
    db.close()

    async with opened(path, clock) as state:
        assert await state.get_online_nodes() == [2**63, 2**64 - 2]
        assert await state.node_exists(first)
        run = await state.get_run(run_id)
        assert run is not None
        assert run.run_id == run_id
        assert list(await state.get_run_statuses([run_id])) == [run_id]
        [pulled] = await state.pull_message_ins(first)
        assert pulled.metadata.run_id == run_id
        assert pulled.metadata.dst_node_id == first
        answer = reply(pulled, clock)
        answer.metadata.message_id = await state.store_message_res(answer)
        assert await state.take_replies(run_id, [pulled.metadata.message_id]) == [answer]


async def test_concurrent_pulls_never_hand_out_one_instruction_twice(
    clock: FakeClock, tmp_path: Path
) -> None:
    """Pulls racing on the shared connection each get distinct instructions."""
    async with opened(tmp_path / "state.db", clock) as state:
        node_id = await state.create_node(ping_interval=30.0)
        run_id = await state.create_run("a", "1", "", {}, ConfigRecord())
        for _ in range(20):
            await state.store_message_ins(instruction(run_id, node_id, clock))

        batches = await asyncio.gather(*(state.pull_message_ins(node_id, 3) for _ in range(10)))

        ids = [message.metadata.message_id for batch in batches for message in batch]
        assert len(ids) == 20
        assert len(set(ids)) == 20


class CancellingClock(FakeClock):
    """A clock whose next reading, once armed, cancels the task that reads it."""

    armed = False

    def __call__(self) -> float:
        if self.armed:
            self.armed = False
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
        return super().__call__()


async def test_a_cancelled_call_happens_entirely_or_not_at_all(tmp_path: Path) -> None:
    """A caller cancelled around its operation never leaves half of it; later calls work.

    ``create_run`` writes the run and its context in one transaction; cancelling its caller
    (here at the clock reading, just before the operation is queued) must not split them.
    """
    clock = CancellingClock()
    async with opened(tmp_path / "state.db", clock) as state:
        clock.armed = True
        with pytest.raises(asyncio.CancelledError):
            await state.create_run("a", "1", "", {}, ConfigRecord())

        run_id = await state.create_run("a", "1", "", {}, ConfigRecord())

        runs = [run.run_id for run in await state.get_runs()]
        assert run_id in runs and len(runs) in (1, 2)
        for each in runs:
            assert await state.get_serverapp_context(each) == Context(run_id=each)


async def test_a_failing_transaction_leaves_nothing_behind(clock: FakeClock) -> None:
    """An error after a write inside a multi-statement operation rolls the write back."""
    state = await SqliteLinkState.open(":memory:", clock=clock)
    try:

        def write_then_fail(db: Any) -> None:
            db.change("INSERT INTO known_public_key (public_key) VALUES (?)", (b"key",))
            raise ValueError("second step failed")

        with pytest.raises(ValueError, match="second step"):
            await state._transaction(write_then_fail)
        assert await state.get_known_public_keys() == set()
        await state.replace_known_public_keys([b"key"])  # the connection is usable
        assert await state.get_known_public_keys() == {b"key"}
    finally:
        await state.aclose()


async def test_closed_state_refuses_calls_and_closes_once(clock: FakeClock) -> None:
    """After ``aclose`` calls raise ``RuntimeError``; a second ``aclose`` is harmless."""
    state = await SqliteLinkState.open(":memory:", clock=clock)
    await state.aclose()
    await state.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await state.get_runs()


async def test_a_corrupted_file_is_refused_unless_the_check_is_skipped(
    tmp_path: Path, clock: FakeClock
) -> None:
    """``quick_check`` at open finds a torn page; ``check_integrity=False`` serves the file."""
    path = tmp_path / "state.db"
    async with opened(path, clock) as state:
        for _ in range(2000):
            await state.create_node(30.0)
    corrupt_a_page(path)

    with pytest.raises(DatabaseCorruptError, match=r"state\.db' is corrupted \(Page \d+: "):
        await SqliteLinkState.open(str(path), clock=clock)
    unchecked = await SqliteLinkState.open(str(path), clock=clock, check_integrity=False)
    await unchecked.aclose()
