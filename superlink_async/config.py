"""The server's configuration: every ``flower-superlink`` 1.18.0 option, parsed and checked.

The CLI builds a ``Config`` from its options (its defaults are ``Config``'s); an embedding
application builds one directly. ``Config.check`` is the one validation of both: the
reference's start-up checks in its order, plus ours, each failure one ``ConfigError`` that
carries the reference's text and how it ends the process. The files the options name (TLS,
``--auth-list-public-keys``) are read once per ``Config``, by the check, and kept for the
runtime.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import re
import secrets
import shutil
import socket
import sys
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from ipaddress import IPv6Address, ip_address
from pathlib import Path
from typing import TYPE_CHECKING

from superlink_async.exit_codes import ExitCode

if TYPE_CHECKING:
    from superlink_async.tls import ListenerTls

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

FLEET_GRPC_RERE = "grpc-rere"
FLEET_GRPC_ADAPTER = "grpc-adapter"
FLEET_REST = "rest"
FLEET_API_TYPES = (FLEET_GRPC_RERE, FLEET_GRPC_ADAPTER, FLEET_REST)

ISOLATION_SUBPROCESS = "subprocess"
ISOLATION_PROCESS = "process"
ISOLATION_MODES = (ISOLATION_SUBPROCESS, ISOLATION_PROCESS)

DEFAULT_SERVERAPPIO_ADDRESS = "0.0.0.0:9091"
DEFAULT_FLEET_GRPC_ADDRESS = "0.0.0.0:9092"
DEFAULT_EXEC_ADDRESS = "0.0.0.0:9093"
DEFAULT_FLEET_REST_ADDRESS = "0.0.0.0:9095"
DEFAULT_SIMULATIONIO_ADDRESS = "0.0.0.0:9096"
DEPLOYMENT_EXECUTOR = "flwr.superexec.deployment:executor"
SIMULATION_EXECUTOR = "flwr.superexec.simulation:executor"
#: The only ``--executor`` values served: both are built in, not imported (see ``_check_executor``).
EXECUTORS = (DEPLOYMENT_EXECUTOR, SIMULATION_EXECUTOR)
#: ``--database`` default: keep everything in this process's memory (``state.factory``).
IN_MEMORY_DATABASE = ":flwr-in-memory-state:"
#: ``--database`` values starting so are PostgreSQL connection URLs (``state.postgres``).
POSTGRES_URL_PREFIXES = ("postgresql://", "postgres://")
#: ``--database-pool-size`` default: the most connections one process keeps open to
#: PostgreSQL. A connection stays busy for an event-loop turn per statement, and turns grow
#: long on a busy loop: at 500 polling SuperNodes 10 connections made calls queue for them
#: (p99 3.7 s against 0.6 s with 40, at the same CPU). Connections open only as calls need
#: them, so an idle server keeps few; two replicas at 40 stay within PostgreSQL's default
#: ``max_connections`` of 100.
DEFAULT_DATABASE_POOL_SIZE = 40
#: What a password is shown as wherever a database URL is written out.
MASKED_PASSWORD = "***"
#: ``--event-loop`` choices of the command line (see runtime/process.py).
EVENT_LOOPS = ("asyncio", "uvloop")
#: ``--replica-lease`` default: seconds a replica's lease lasts without renewal.
DEFAULT_REPLICA_LEASE = 20.0
#: What a ``--replica-id`` may be: it names the replica in log lines, metrics and run details.
REPLICA_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: Hex characters a generated replica id ends with (``-`` and 4 random bytes).
_REPLICA_SUFFIX_LENGTH = 9


def is_postgres_url(database: str) -> bool:
    """Whether ``--database`` names a PostgreSQL database rather than memory or a SQLite file."""
    return database.startswith(POSTGRES_URL_PREFIXES)


def mask_database(database: str) -> str:
    """``database`` fit for a log line, an error or a metric: any password shown as ``***``.

    The one place a ``--database`` value is masked: the password of a PostgreSQL URL's
    ``user:password@`` part and of its ``password=`` query parameter. A URL whose parts are
    ambiguous (e.g. a password with an unescaped ``/``, ``?`` or ``#``) is hidden after its
    scheme. Other values (memory, SQLite paths) hold no password and are returned as they are.
    """
    if not is_postgres_url(database):
        return database
    parts = _split_postgres_url(database)
    if parts is None:
        return f"{database.partition('://')[0]}://{MASKED_PASSWORD}"
    auth, _, hosts = parts.netloc.rpartition("@")
    netloc = f"{auth.partition(':')[0]}:{MASKED_PASSWORD}@{hosts}" if ":" in auth else parts.netloc
    query = "&".join(
        f"{pair.partition('=')[0]}={MASKED_PASSWORD}"
        if pair.partition("=")[0].lower() == "password"
        else pair
        for pair in parts.query.split("&")
        if pair
    )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def _split_postgres_url(database: str) -> urllib.parse.SplitResult | None:
    """The URL's parts, or None when an ``@`` or ``#`` outside the user part makes them ambiguous.

    A password must be percent-encoded; one that is not can end up in the path, the query
    or the fragment, where nothing would recognise it as a password.
    """
    parts = urllib.parse.urlsplit(database)
    if parts.fragment or "#" in database or "@" in parts.path or "@" in parts.query:
        return None
    return parts


class ConfigError(ValueError):
    """Options, or files they name, that the server cannot use; the text says which and why.

    It also says how the reference ends on it, which the CLI follows: with ``exit_code``
    flwr's exit block for that code is logged (e.g. 600 for an address); with ``plain`` the
    bare text goes to stderr, as the reference's ``sys.exit(text)``; else one ERROR line.
    The process status is 1 in every case.
    """

    def __init__(self, message: str, *, exit_code: ExitCode | None = None, plain: bool = False):
        super().__init__(message)
        self.exit_code = exit_code
        self.plain = plain


class AddressError(ConfigError):
    """An address flag could not be parsed (exit code 600)."""

    def __init__(self, address: str) -> None:
        super().__init__(
            f"Address ({address}) cannot be parsed.", exit_code=ExitCode.COMMON_ADDRESS_INVALID
        )
        self.address = address


class KeyListError(ConfigError):
    """The ``--auth-list-public-keys`` file is missing or holds something else than EC keys.

    The reference ends on it with the bare text on stderr.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, plain=True)


@dataclass(frozen=True)
class Address:
    """A host and port to bind or dial; IPv6 hosts are kept without brackets."""

    host: str
    port: int

    @classmethod
    def parse(cls, address: str) -> Address:
        """Split ``host:port`` at the last colon, as the reference does; ``[v6]:port`` too.

        An empty host (``:9091``) means every interface, as it does for the reference.
        """
        host, sep, port_text = address.rpartition(":")
        try:
            port = int(port_text)
        except ValueError:
            port = 0
        if not sep or not 0 < port < 65536:
            raise AddressError(address)
        return cls(host.strip("[]"), port)

    @property
    def is_ipv6(self) -> bool:
        """Whether the host is an IPv6 literal (it needs brackets in ``host:port``)."""
        try:
            return isinstance(ip_address(self.host), IPv6Address)
        except ValueError:
            return False

    def dialable(self) -> Address:
        """The address a local child should dial: all-interfaces hosts become ``127.0.0.1``."""
        return Address("127.0.0.1", self.port) if self.host in ("", "0.0.0.0") else self

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.is_ipv6 else f"{self.host}:{self.port}"


def default_flwr_dir() -> Path:
    """``$FLWR_HOME``, else ``$XDG_DATA_HOME/.flwr``, else ``~/.flwr`` (as flwr decides)."""
    if home := os.environ.get("FLWR_HOME"):
        return Path(home)
    xdg = os.environ.get("XDG_DATA_HOME")
    return Path(xdg) / ".flwr" if xdg else Path.home() / ".flwr"


def default_storage_dir() -> Path:
    """Where FABs are kept unless ``--storage-dir`` says otherwise."""
    return default_flwr_dir() / "superlink" / "ffs"


def _flwr_program(name: str) -> tuple[str, ...]:
    """``name`` from PATH, else from this interpreter's own bin directory.

    The second place covers a virtual environment that was never activated.
    """
    beside_python = Path(sys.executable).with_name(name)
    if shutil.which(name) is None and beside_python.exists():
        return (str(beside_python),)
    return (name,)


def default_replica_id() -> str:
    """``<short hostname>-<8 hex chars>``: readable in logs, new at every start.

    A restarted process thus never takes over a lease that another process may still hold.
    Characters a ``--replica-id`` may not have become ``-``.
    """
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().partition(".")[0])
    host = host[: 64 - _REPLICA_SUFFIX_LENGTH] or "superlink"
    return f"{host}-{secrets.token_hex(4)}"


def default_serverapp_command() -> tuple[str, ...]:
    """``flwr-serverapp``, the program launched per run by the deployment executor."""
    return _flwr_program("flwr-serverapp")


def default_simulation_command() -> tuple[str, ...]:
    """``flwr-simulation``, the program launched per run by the simulation executor."""
    return _flwr_program("flwr-simulation")


@dataclass(frozen=True)
class FleetListener:
    """One Fleet API transport and the address it binds."""

    api_type: str
    address: Address


#: Admission control's bounds (see ``transports.gate.Admission``; docs/operations.md).
DEFAULT_OVERLOAD_LAG = 0.05
DEFAULT_MAX_FLEET_IN_FLIGHT = 1024
#: The reference's limit for gRPC messages in both directions (2 GiB - 1): our default
#: ``--max-message-bytes`` and its largest value.
MAX_MESSAGE_BYTES = 2_147_483_647

_SSL_FLAGS = ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile")


@dataclass(frozen=True)
class Config:
    """Everything the server needs to start; defaults are flower-superlink 1.18.0's."""

    insecure: bool = False
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_ca_certfile: Path | None = None
    flwr_dir: str | None = None
    isolation: str = ISOLATION_SUBPROCESS
    database: str = IN_MEMORY_DATABASE
    storage_dir: Path = field(default_factory=default_storage_dir)
    auth_list_public_keys: Path | None = None
    auth_superlink_private_key: Path | None = None
    auth_superlink_public_key: Path | None = None
    serverappio_api_address: str = DEFAULT_SERVERAPPIO_ADDRESS
    fleet_api_type: str = FLEET_GRPC_RERE
    fleet_api_address: str | None = None
    fleet_api_num_workers: int = 1
    exec_api_address: str = DEFAULT_EXEC_ADDRESS
    executor: str = DEPLOYMENT_EXECUTOR
    executor_dir: str = "."
    executor_config: str | None = None
    simulationio_api_address: str = DEFAULT_SIMULATIONIO_ADDRESS
    # Our additions (not in flower-superlink):
    serverapp_command: tuple[str, ...] = field(default_factory=default_serverapp_command)
    simulation_command: tuple[str, ...] = field(default_factory=default_simulation_command)
    shutdown_grace: float = 5.0
    serverappio_tls: bool = False
    max_message_bytes: int = MAX_MESSAGE_BYTES
    log_format: str = "default"
    metrics_address: str | None = None
    log_level: str | None = None
    #: Processes that check node-auth signatures; None: ``default_workers()`` (one per
    #: CPU but one with 4+ CPUs, else none).
    signature_workers: int | None = None
    #: Idle polls are answered before their signature check while the loop runs this
    #: late (seconds; 0: never).
    overload_lag: float = DEFAULT_OVERLOAD_LAG
    #: Polls and registrations are refused with UNAVAILABLE while this many Fleet calls
    #: are in flight (0: no bound).
    max_fleet_in_flight: int = DEFAULT_MAX_FLEET_IN_FLIGHT
    #: Whether a ``--database`` file passes SQLite's ``quick_check`` before it is served.
    check_database: bool = True
    #: Most connections to a PostgreSQL ``--database`` this process keeps open.
    database_pool_size: int = DEFAULT_DATABASE_POOL_SIZE
    #: This process's name among the replicas sharing a database (its lease, its runs).
    replica_id: str = field(default_factory=default_replica_id)
    #: Seconds the replica's lease lasts; renewed every quarter of it.
    replica_lease: float = DEFAULT_REPLICA_LEASE

    def __repr__(self) -> str:
        """The usual dataclass text, with the ``--database`` password masked (it gets logged)."""
        shown = {item.name: getattr(self, item.name) for item in fields(self) if item.repr}
        shown["database"] = mask_database(self.database)
        values = ", ".join(f"{name}={value!r}" for name, value in shown.items())
        return f"{type(self).__name__}({values})"

    @property
    def simulation(self) -> bool:
        """Whether runs are simulations: SimulationIo and ``flwr-simulation``, no Fleet."""
        return self.executor == SIMULATION_EXECUTOR

    @property
    def fleet_address(self) -> str:
        """The first Fleet bind address, defaulting per API type as the reference does."""
        return self._fleet_addresses()[0]

    @property
    def fleet_api_types(self) -> list[str]:
        """The Fleet transports to serve: one type, or several separated by commas."""
        return [part.strip() for part in self.fleet_api_type.split(",")]

    def fleet_listeners(self) -> list[FleetListener]:
        """Every Fleet transport with its parsed address.

        ``--fleet-api-type grpc-rere,rest`` serves both from one process and one state;
        ``--fleet-api-address`` then lists one address per type, in the same order, or is
        left out so each type gets its default. ``AddressError`` or ``ConfigError``.
        """
        types = self.fleet_api_types
        unknown = [kind for kind in types if kind not in FLEET_API_TYPES]
        if unknown:
            raise ConfigError(
                f"Unknown Fleet API type(s) {', '.join(unknown)}; "
                f"choose from {', '.join(FLEET_API_TYPES)}"
            )
        if len(set(types)) != len(types):
            raise ConfigError(f"A Fleet API type is listed twice: {self.fleet_api_type}")
        addresses = [Address.parse(text) for text in self._fleet_addresses()]
        if len(addresses) != len(types):
            raise ConfigError(
                f"--fleet-api-address lists {len(addresses)} address(es) for "
                f"{len(types)} Fleet API type(s); give one per type, in the same order"
            )
        if len({(a.host, a.port) for a in addresses}) != len(addresses):
            raise ConfigError(
                "Two Fleet API types would bind the same address; "
                "give --fleet-api-address one address per type"
            )
        return [
            FleetListener(kind, address) for kind, address in zip(types, addresses, strict=True)
        ]

    def _fleet_addresses(self) -> list[str]:
        if self.fleet_api_address:
            return [part.strip() for part in self.fleet_api_address.split(",")]
        return [
            DEFAULT_FLEET_REST_ADDRESS if kind == FLEET_REST else DEFAULT_FLEET_GRPC_ADDRESS
            for kind in self.fleet_api_types
        ]

    def check(self, warn: Callable[[str], None] | None = None) -> None:
        """Every start-up check of flower-superlink 1.18.0, in its order, plus ours.

        ``ConfigError`` for the first failure; ``warn`` receives the reference's warnings
        as they come (the CLI logs them; an embedder may leave them out). The TLS files and
        the key list are read here, once, and kept (``tls``, ``known_public_keys``). A
        ``Config`` that passed is not checked again: the CLI checks it, then the SuperLink.
        """
        if self.__dict__.get("_passed_check"):
            return
        self._check(warn or _ignore)
        self.__dict__["_passed_check"] = True  # frozen: as cached_property writes its values

    def _check(self, say: Callable[[str], None]) -> None:
        for address in (
            self.serverappio_api_address,
            self.exec_api_address,
            self.simulationio_api_address,
        ):
            Address.parse(address)
        if self.insecure:
            say(
                "Option `--insecure` was set. Starting insecure HTTP server with unencrypted "
                "communication (TLS disabled). Proceed only if you understand the risks."
            )
        else:
            self._require_certificate_files()
        self.tls  # noqa: B018 (loading them is the check)
        _check_executor(self)
        _check_database(self)
        _check_replica(self)
        if self.metrics_address:
            Address.parse(self.metrics_address)
        if self.simulation:
            return  # The reference reads no Fleet or node-auth option with this executor.
        self.fleet_listeners()
        if self.fleet_api_num_workers != 1:
            say(
                "The Fleet API currently supports only 1 worker. You have specified "
                f"{self.fleet_api_num_workers} workers. Support for multiple workers will be "
                "added in future releases. Proceeding with a single worker."
            )
        if self.auth_superlink_private_key or self.auth_superlink_public_key:
            say(
                "The `--auth-superlink-private-key` and `--auth-superlink-public-key` "
                "arguments are deprecated and will be removed in a future release. Node "
                "authentication no longer requires these arguments."
            )
        if self.auth_list_public_keys:
            self.known_public_keys  # noqa: B018 (reading them is the check)
        _check_node_auth_transports(self)

    @functools.cached_property
    def tls(self) -> ListenerTls:
        """The TLS of every listener (``superlink_async.tls``), loaded on first use only.

        Raises ``TlsError``, a ``ConfigError``, for files that cannot serve.
        """
        from superlink_async.tls import listener_tls  # noqa: PLC0415 (tls builds on Config)

        return listener_tls(self)

    @functools.cached_property
    def known_public_keys(self) -> list[bytes]:
        """The ``--auth-list-public-keys`` keys as PEM, read on first use only; [] without one.

        Raises ``KeyListError`` for a file that is missing or holds anything but EC keys.
        """
        if self.auth_list_public_keys is None:
            return []
        return load_known_public_keys(self.auth_list_public_keys)

    def _require_certificate_files(self) -> None:
        """The reference's three checks, with its texts; it returns once all three are files.

        Two of them end the reference with the bare text on stderr (``plain``).
        """
        paths = (self.ssl_ca_certfile, self.ssl_certfile, self.ssl_keyfile)
        given = {flag: path for flag, path in zip(_SSL_FLAGS, paths, strict=True) if path}
        if len(given) == len(_SSL_FLAGS):
            for flag, path in given.items():
                if not path.is_file():
                    raise ConfigError(
                        f"Path argument `{flag}` does not point to a file.", plain=True
                    )
            return
        # Both texts keep the reference's typo verbatim: an em dash before `-ssl-ca-certfile`.
        if given:
            raise ConfigError(
                "You need to provide valid file paths to `--ssl-certfile`, `--ssl-keyfile`, "
                "and `\u2014-ssl-ca-certfile` to create a secure connection in Fleet API server "
                "(gRPC-rere).",
                plain=True,
            )
        raise ConfigError(
            "Certificates are required unless running in insecure mode. Please provide "
            "certificate paths to `--ssl-certfile`, `--ssl-keyfile`, and `\u2014-ssl-ca-certfile` "
            "or run the server in insecure mode using '--insecure' if you understand the risks."
        )


def _ignore(warning: str) -> None:
    """Where warnings go when nobody asked for them."""


def _check_node_auth_transports(config: Config) -> None:
    """With a key list, refuse Fleet transports whose 1.18 clients cannot authenticate.

    The reference silently ignored the list for REST and the GrpcAdapter, letting any node
    in; refusing the combination keeps unknown nodes away from work.
    """
    unsigned = [kind for kind in config.fleet_api_types if kind != FLEET_GRPC_RERE]
    if config.auth_list_public_keys is not None and unsigned:
        raise ConfigError(
            f"--auth-list-public-keys cannot be used with --fleet-api-type {','.join(unsigned)}: "
            "REST and GrpcAdapter SuperNodes cannot authenticate, so unknown nodes would get "
            "work. Serve those SuperNodes over grpc-rere, or drop the key list."
        )


#: libpq's ``sslmode`` values (asyncpg takes the same).
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _check_database(config: Config) -> None:
    """A PostgreSQL ``--database`` URL that can be parsed; other values are not checked here.

    The connection itself is tried when the state opens, before anything binds.
    """
    if config.database_pool_size < 1:
        raise ConfigError(
            f"--database-pool-size {config.database_pool_size}: at least 1 connection is needed"
        )
    if not is_postgres_url(config.database):
        return
    shown = mask_database(config.database)
    parts = _split_postgres_url(config.database)
    if parts is None:
        raise ConfigError(
            f"--database {shown}: cannot parse the PostgreSQL URL; percent-encode any '@', "
            "'/', '?' or '#' in the user name or password (e.g. '@' as %40)"
        )
    for host in parts.netloc.rpartition("@")[2].split(","):
        port = host.rpartition("]")[2].rpartition(":")
        if port[1] and not (port[2].isdigit() and 0 < int(port[2]) < 65536):
            raise ConfigError(f"--database {shown}: invalid port {port[2]!r}")
    query = urllib.parse.parse_qs(parts.query)
    for mode in query.get("sslmode", []):
        if mode not in SSL_MODES:
            raise ConfigError(
                f"--database {shown}: sslmode {mode!r} is not one of {', '.join(SSL_MODES)}"
            )


def _check_replica(config: Config) -> None:
    """A ``--replica-id`` fit for log lines and run details, and a lease that can lapse."""
    if not REPLICA_ID.fullmatch(config.replica_id):
        raise ConfigError(
            f"--replica-id {config.replica_id!r}: give 1-64 characters of letters, digits, "
            "'.', '_' and '-'"
        )
    lease = config.replica_lease
    if not (math.isfinite(lease) and lease > 0):
        raise ConfigError(f"--replica-lease {lease}: give a finite number of seconds above 0")


def _check_executor(config: Config) -> None:
    """One of the two built-in executors, with settings it can use; else ``ConfigError``.

    The reference imports any ``module:attribute`` Executor object, but such objects are
    written against flwr's own thread-based state classes, which this server does not have.
    """
    if config.executor not in EXECUTORS:
        raise ConfigError(
            f"`--executor {config.executor}` cannot be used: superlink-async serves "
            f"`{DEPLOYMENT_EXECUTOR}` and `{SIMULATION_EXECUTOR}` only, because other executor "
            "objects are written against flwr's own state classes."
        )
    executor_settings(config)


#: One ``key=value`` pair of ``--executor-config``; a value may be quoted and hold spaces.
_EXECUTOR_SETTING = re.compile(r"(\S+?)=('[^']*'|\"[^\"]*\"|\S+)")


def executor_settings(config: Config) -> dict[str, object]:
    """``--executor-config`` parsed as the reference does.

    That is space-separated TOML ``key=value`` scalars, or the path of a ``.toml`` file
    (its tables flattened to dotted keys). ``ConfigError`` for text that is not TOML
    scalars, or (deployment executor, as in the reference) a ``root-certificates`` path that
    is not a readable file. The reference's simulation executor ignores every setting, so
    nothing else is checked for it.
    """
    text = config.executor_config
    if not text:
        return {}
    settings = _read_settings_file(text) if text.endswith(".toml") else _parse_settings(text)
    if not config.simulation:
        _check_deployment_settings(settings)
    return settings


def _parse_settings(text: str) -> dict[str, object]:
    pairs = _EXECUTOR_SETTING.findall(text)
    try:
        return tomllib.loads("\n".join(f"{key} = {value}" for key, value in pairs))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"--executor-config {text!r} is not space-separated key=value pairs with "
            f"bool, int, float or quoted string values ({exc})"
        ) from exc


def _read_settings_file(path: str) -> dict[str, object]:
    try:
        with Path(path).open("rb") as file:
            document = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"--executor-config: cannot read the TOML file {path!r}: {exc}") from exc
    return _flatten(document)


def _flatten(table: dict[str, object], prefix: str = "") -> dict[str, object]:
    """Nested tables as one level of dotted keys, as the reference flattens them."""
    flat: dict[str, object] = {}
    for key, value in table.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            flat.update(_flatten(value, name))
        else:
            flat[name] = value
    return flat


def _check_deployment_settings(settings: dict[str, object]) -> None:
    """The types the deployment executor demands, and its CA file, which it reads at start-up."""
    for key in ("superlink", "root-certificates", "flwr-dir"):
        if settings.get(key) and not isinstance(settings[key], str):
            raise ConfigError(f"--executor-config: the `{key}` value should be of type `str`.")
    certificates = settings.get("root-certificates")
    if isinstance(certificates, str) and certificates:
        try:
            Path(certificates).read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"--executor-config: cannot read root-certificates {certificates!r}: "
                f"{exc.strerror or exc}"
            ) from exc


# The reference crashed with a traceback on malformed cells; this one line instead.
_UNPARSEABLE_KEY_LIST = (
    "Error: Unable to parse the public keys in the CSV file. Please ensure that the CSV "
    "file path points to a valid known SSH public keys files and try again."
)


def load_known_public_keys(path: Path) -> list[bytes]:
    """Every OpenSSH EC public key in the CSV, as PEM SubjectPublicKeyInfo bytes."""
    if not path.exists():
        raise KeyListError(
            "The provided path to the known public keys CSV file does not exist: "
            f"{path}. Please provide the CSV file path containing known public keys "
            "to '--auth-list-public-keys'."
        )
    try:
        with path.open(newline="", encoding="utf-8") as csv_file:
            cells = [cell for row in csv.reader(csv_file) for cell in row]
    except OSError as exc:
        raise KeyListError(
            f"Error: Unable to read the known public keys CSV file {path}: {exc.strerror}."
        ) from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise KeyListError(_UNPARSEABLE_KEY_LIST) from exc
    return [_pem_from_ssh(cell) for cell in cells]


def _pem_from_ssh(cell: str) -> bytes:
    """One OpenSSH EC public key line as PEM SubjectPublicKeyInfo, the form nodes send."""
    # Here, not at the top: the health probe imports this module and needs no cryptography.
    from cryptography.exceptions import UnsupportedAlgorithm  # noqa: PLC0415
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    try:
        key = serialization.load_ssh_public_key(cell.strip().encode())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyListError(_UNPARSEABLE_KEY_LIST) from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise KeyListError(_UNPARSEABLE_KEY_LIST)
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
