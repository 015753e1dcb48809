"""``--database postgresql://…``: what selects PostgreSQL, what a URL names, and the mask.

A password never leaves the process in a log line, an error or a metric: every text that
could hold the URL goes through ``mask_database``, pinned here for every place a password
can sit in a libpq URL.
"""

from __future__ import annotations

import pytest

from superlink_async.config import (
    IN_MEMORY_DATABASE,
    Config,
    ConfigError,
    is_postgres_url,
    mask_database,
)
from superlink_async.state.postgres.connect import (
    DEFAULT_CONNECT_TIMEOUT,
    PostgresTarget,
    connect_timeout,
    without_connect_timeout,
)


@pytest.mark.parametrize(
    ("database", "postgres"),
    [
        ("postgresql://u@h/db", True),
        ("postgres://u@h/db", True),
        (IN_MEMORY_DATABASE, False),
        (":memory:", False),
        ("state.db", False),
        ("postgresql.db", False),
        ("/var/lib/postgresql/state.db", False),
    ],
)
def test_only_the_two_url_schemes_select_postgresql(database: str, postgres: bool) -> None:
    assert is_postgres_url(database) is postgres


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://flwr:s3cret@db:5432/fl", "postgresql://flwr:***@db:5432/fl"),
        (
            "postgres://flwr:s3cret@db/fl?sslmode=require",
            "postgres://flwr:***@db/fl?sslmode=require",
        ),
        ("postgresql://flwr:p%40ss%3Aw@db/fl", "postgresql://flwr:***@db/fl"),
        ("postgresql://flwr:a:b@db/fl", "postgresql://flwr:***@db/fl"),
        (
            "postgresql://db/fl?user=flwr&password=s3cret",
            "postgresql://db/fl?user=flwr&password=***",
        ),
        (
            "postgresql://db/fl?PASSWORD=s3cret&sslmode=verify-full",
            "postgresql://db/fl?PASSWORD=***&sslmode=verify-full",
        ),
        ("postgresql://flwr@db/fl", "postgresql://flwr@db/fl"),
        ("postgresql://flwr:@db/fl", "postgresql://flwr:***@db/fl"),
        # Unescaped '/', '?', '#' or '@' make the parts ambiguous: all of it is hidden.
        ("postgresql://flwr:s3/cret@db/fl", "postgresql://***"),
        ("postgresql://flwr:s3?cret@db/fl", "postgresql://***"),
        ("postgresql://flwr:s3#cret@db/fl", "postgresql://***"),
        ("state.db", "state.db"),
        (IN_MEMORY_DATABASE, IN_MEMORY_DATABASE),
    ],
)
def test_the_password_is_masked_wherever_it_sits(url: str, shown: str) -> None:
    assert mask_database(url) == shown
    assert "s3" not in mask_database(url)


@pytest.mark.parametrize(
    ("url", "environ", "target"),
    [
        ("postgresql://flwr:pw@db.example:6543/fl", {}, ("db.example", 6543, "fl", "flwr")),
        ("postgresql://flwr@db.example/fl", {}, ("db.example", 5432, "fl", "flwr")),
        ("postgresql://[::1]:6000/fl?user=x", {}, ("::1", 6000, "fl", "x")),
        ("postgresql:///?user=x", {}, ("localhost", 5432, "x", "x")),
        (
            "postgresql://",
            {"PGHOST": "h", "PGPORT": "7000", "PGUSER": "u", "PGDATABASE": "d"},
            ("h", 7000, "d", "u"),
        ),
        ("postgresql://a:1,b:2/fl?user=u", {}, ("a", 1, "fl", "u")),
        (
            "postgresql://u@%2Fvar%2Frun%2Fpostgresql/fl",
            {},
            ("/var/run/postgresql", 5432, "fl", "u"),
        ),
    ],
)
def test_the_target_is_what_libpq_would_pick(
    url: str, environ: dict[str, str], target: tuple[str, int, str, str]
) -> None:
    parsed = PostgresTarget.parse(url, environ)
    assert (parsed.host, parsed.port, parsed.database, parsed.user) == target


def test_a_target_is_described_by_host_port_and_database() -> None:
    assert PostgresTarget("db", 5432, "fl", "u").describe() == "database 'fl' on db:5432"
    assert PostgresTarget("::1", 5432, "fl", "u").describe() == "database 'fl' on [::1]:5432"


@pytest.mark.parametrize(
    ("url", "environ", "seconds"),
    [
        ("postgresql://h/d", {}, DEFAULT_CONNECT_TIMEOUT),
        ("postgresql://h/d?connect_timeout=3", {}, 3.0),
        ("postgresql://h/d?connect_timeout=1", {}, 2.0),  # libpq's floor
        ("postgresql://h/d?connect_timeout=0", {}, DEFAULT_CONNECT_TIMEOUT),
        ("postgresql://h/d", {"PGCONNECT_TIMEOUT": "4"}, 4.0),
        ("postgresql://h/d?connect_timeout=5", {"PGCONNECT_TIMEOUT": "4"}, 5.0),
    ],
)
def test_libpq_connect_timeout_is_honoured(
    url: str, environ: dict[str, str], seconds: float
) -> None:
    assert connect_timeout(url, environ) == seconds


def test_the_connect_timeout_is_not_sent_to_the_server_as_a_setting() -> None:
    assert (
        without_connect_timeout("postgresql://h/d?sslmode=require&connect_timeout=3&x=1")
        == "postgresql://h/d?sslmode=require&x=1"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "postgresql://u:s3cret@db:port/fl",
            "--database postgresql://u:***@db:port/fl: invalid port 'port'",
        ),
        (
            "postgresql://u:s3cret@db:70000/fl",
            "--database postgresql://u:***@db:70000/fl: invalid port '70000'",
        ),
        (
            "postgresql://u:s3cret@db/fl?sslmode=always",
            "--database postgresql://u:***@db/fl?sslmode=always: sslmode 'always' is not one "
            "of disable, allow, prefer, require, verify-ca, verify-full",
        ),
        (
            "postgresql://u:s3/cret@db/fl",
            "--database postgresql://***: cannot parse the PostgreSQL URL; percent-encode any "
            "'@', '/', '?' or '#' in the user name or password (e.g. '@' as %40)",
        ),
    ],
)
def test_a_url_that_cannot_be_parsed_is_a_config_error_without_the_password(
    url: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        Config(insecure=True, database=url).check()
    assert str(raised.value) == message
    assert "s3" not in str(raised.value)


def test_a_pool_needs_a_connection() -> None:
    with pytest.raises(ConfigError, match="--database-pool-size 0: at least 1"):
        Config(insecure=True, database_pool_size=0).check()


def test_other_database_values_are_not_checked_as_urls() -> None:
    for database in (IN_MEMORY_DATABASE, ":memory:", "state.db", "postgres.db?x"):
        Config(insecure=True, database=database).check()


def test_a_config_shows_its_database_masked() -> None:
    """Embedders log their Config; its text masks the password like every other."""
    config = Config(insecure=True, database="postgresql://flwr:s3cret@db/fl")
    assert "database='postgresql://flwr:***@db/fl'" in repr(config)
    assert "s3cret" not in repr(config) and "s3cret" not in str(config)
    assert repr(Config()).startswith("Config(insecure=False, ssl_certfile=None")
