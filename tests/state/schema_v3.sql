-- Schema version 3 as files written by superlink-async hold it (sqlite_master, one
-- statement a line, comments dropped and white space folded). A file on disk keeps this
-- shape until a migration changes it: tests/state/test_sqlite.py compares fresh files, and
-- files of version 2 (schema_v2.sql) once migrated, to it.
CREATE INDEX log_by_run ON log (run_id, timestamp);
CREATE INDEX message_ins_by_dst ON message_ins (dst_node_id, seq) WHERE delivered_at IS NULL;
CREATE INDEX message_ins_by_run ON message_ins (run_id);
CREATE INDEX run_by_status ON run (status, pending_at, seq);
CREATE TABLE context (run_id INTEGER PRIMARY KEY REFERENCES run (run_id), context BLOB NOT NULL);
CREATE TABLE known_public_key (public_key BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE log (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER NOT NULL REFERENCES run (run_id), timestamp REAL NOT NULL, text TEXT NOT NULL);
CREATE TABLE message_ins (seq INTEGER PRIMARY KEY, message_id TEXT NOT NULL, run_id INTEGER NOT NULL, src_node_id INTEGER NOT NULL, dst_node_id INTEGER NOT NULL, reply_to_message_id TEXT NOT NULL, group_id TEXT NOT NULL, message_type TEXT NOT NULL, created_at REAL NOT NULL, ttl REAL NOT NULL, delivered_at REAL, UNIQUE (message_id), FOREIGN KEY (run_id) REFERENCES run (run_id));
CREATE TABLE message_ins_payload (seq INTEGER PRIMARY KEY REFERENCES message_ins (seq) ON DELETE CASCADE, content BLOB, error BLOB);
CREATE TABLE message_res (message_id TEXT NOT NULL, run_id INTEGER NOT NULL, src_node_id INTEGER NOT NULL, dst_node_id INTEGER NOT NULL, reply_to_message_id TEXT NOT NULL, group_id TEXT NOT NULL, message_type TEXT NOT NULL, created_at REAL NOT NULL, ttl REAL NOT NULL, content BLOB, error BLOB, PRIMARY KEY (message_id), UNIQUE (reply_to_message_id), FOREIGN KEY (reply_to_message_id) REFERENCES message_ins (message_id) ON DELETE CASCADE);
CREATE TABLE node (node_id INTEGER PRIMARY KEY, online_until REAL NOT NULL, ping_interval REAL NOT NULL, public_key BLOB UNIQUE);
CREATE TABLE replica (replica_id TEXT PRIMARY KEY, lease_until REAL NOT NULL, started_at REAL NOT NULL);
CREATE TABLE run (seq INTEGER PRIMARY KEY, run_id INTEGER NOT NULL UNIQUE, fab_id TEXT NOT NULL, fab_version TEXT NOT NULL, fab_hash TEXT NOT NULL, override_config BLOB NOT NULL, federation_options BLOB NOT NULL, pending_at TEXT NOT NULL, starting_at TEXT NOT NULL, running_at TEXT NOT NULL, finished_at TEXT NOT NULL, status TEXT NOT NULL, sub_status TEXT NOT NULL, details TEXT NOT NULL, owner TEXT NOT NULL DEFAULT '', reserved_by TEXT NOT NULL DEFAULT '');
