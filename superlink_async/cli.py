"""The ``superlink-async`` command: ``flower-superlink`` 1.18.0's options, checks and log lines.

Start-up follows the reference's order (first log line, ``--flwr-dir`` warning, addresses,
certificates, Fleet API checks), so scripts written against ``flower-superlink`` see the same
output and statuses.
Everything is checked before :func:`superlink_async.runtime.serve` binds a port.
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import click
import typer

from superlink_async._internals import IncompatibleLibraryError
from superlink_async.config import (
    DEFAULT_FLEET_GRPC_ADDRESS,
    DEFAULT_FLEET_REST_ADDRESS,
    DEPLOYMENT_EXECUTOR,
    EVENT_LOOPS,
    FLEET_API_TYPES,
    IN_MEMORY_DATABASE,
    ISOLATION_MODES,
    MAX_MESSAGE_BYTES,
    SIMULATION_EXECUTOR,
    Config,
    ConfigError,
    default_replica_id,
    default_serverapp_command,
    default_simulation_command,
    default_storage_dir,
)
from superlink_async.exit_codes import SuperLinkExit, format_exit_message
from superlink_async.logs import LOG_FORMATS, configure_logging, logger
from superlink_async.state.base import StateError

_PATH = "PATH"
_ADDRESS = "HOST:PORT"


def _expand_long_option_prefix(name: str) -> str:
    """Accept a unique prefix of a long option (``--insec``), as the reference's argparse does.

    Click hands every option name here without its dashes, short ones (``h``) included; those
    single letters are left alone so they keep meaning the short option.
    """
    ctx = click.get_current_context()
    names = [opt.lstrip("-") for param in ctx.command.get_params(ctx) for opt in param.opts]
    matches = [known for known in names if known.startswith(name)]
    if len(name) > 1 and name not in names and len(matches) == 1:
        return matches[0]
    return name


class FleetApiTypes(click.ParamType):
    """One Fleet API type, as in the reference, or several separated by commas."""

    name = "{" + ",".join(FLEET_API_TYPES) + "}[,...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """Check every listed type; an unknown one is a usage error (status 2)."""
        unknown = [part for part in str(value).split(",") if part.strip() not in FLEET_API_TYPES]
        if unknown:
            self.fail(
                f"{', '.join(map(repr, unknown))} is not one of "
                f"{', '.join(map(repr, FLEET_API_TYPES))}.",
                param,
                ctx,
            )
        return str(value)


class CommandLine(click.ParamType):
    """A whole command given as one string, split as a POSIX shell would split it."""

    name = "command"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, ...]:
        """Split ``value``; an unbalanced quote or an empty command is a usage error."""
        if isinstance(value, tuple):  # click's contract: already converted values pass through
            return value
        try:
            words = tuple(shlex.split(value))
        except ValueError as exc:
            self.fail(f"{exc} in {value!r}", param, ctx)
        if not words:
            self.fail("the command is empty", param, ctx)
        return words


def _child_command_option(program: str, address_flag: str, executor: str) -> Any:
    """``--serverapp-command`` / ``--simulation-command``: what the scheduler launches per run."""
    return typer.Option(
        click_type=CommandLine(),
        show_default=f"{program} from PATH, else beside this Python",
        help=f"(superlink-async only) Program launched for each run of {executor} executor "
        "in `subprocess` isolation, as one shell-quoted string; it is given "
        f"`--run-once {address_flag} <address> --insecure`.",
    )


def _default(name: str) -> Any:
    """``Config``'s default for the option of that field: the command line repeats none."""
    return _CONFIG_FIELDS[name].default


_CONFIG_FIELDS = {config_field.name: config_field for config_field in dataclasses.fields(Config)}


# Plain click output (no rich panels): help wraps instead of truncating long option names,
# and errors are one grep-able line, as with the reference's argparse.
app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={
        "help_option_names": ["-h", "--help"],
        "token_normalize_func": _expand_long_option_prefix,
    },
)


@app.command()
def superlink(
    *,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Serve every API in plaintext (no TLS), even if certificate paths are "
            "given; unlike flower-superlink 1.18.0, the REST Fleet API too. Traffic is "
            "unencrypted; use only on trusted networks.",
        ),
    ] = _default("insecure"),
    flwr_dir: Annotated[
        str | None,
        typer.Option(
            metavar=_PATH,
            show_default=False,
            help="Accepted for compatibility and ignored with a warning, as flower-superlink "
            "1.18.0 does (it would name the directory of installed Flower Apps).",
        ),
    ] = _default("flwr_dir"),
    ssl_certfile: Annotated[
        str | None,
        typer.Option(
            metavar=_PATH,
            show_default=False,
            help="Server certificate (PEM; intermediates may follow it) for the Exec and "
            "Fleet APIs. Without --insecure all three --ssl-* files are required.",
        ),
    ] = _default("ssl_certfile"),
    ssl_keyfile: Annotated[
        str | None,
        typer.Option(
            metavar=_PATH,
            show_default=False,
            help="Private key of the server certificate (PEM, unencrypted).",
        ),
    ] = _default("ssl_keyfile"),
    ssl_ca_certfile: Annotated[
        str | None,
        typer.Option(
            metavar=_PATH,
            show_default=False,
            help="CA certificate that signed the server certificate (PEM). It is loaded "
            "and checked, but, as in flower-superlink 1.18.0, clients are never asked for "
            "certificates.",
        ),
    ] = _default("ssl_ca_certfile"),
    isolation: Annotated[
        str,
        typer.Option(
            click_type=click.Choice(ISOLATION_MODES),
            help="Who starts the ServerApp of a run: `subprocess` launches --serverapp-command "
            "for each pending run; `process` leaves that to an independently started "
            "flwr-serverapp.",
        ),
    ] = _default("isolation"),
    database: Annotated[
        str,
        typer.Option(
            help=f"Where runs, messages and nodes are kept: `{IN_MEMORY_DATABASE}` keeps them "
            "in this process's memory, `:memory:` is an in-memory SQLite database, "
            "`postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME[?sslmode=...]` (or `postgres://`) "
            "a PostgreSQL database (libpq's PG* environment variables are honoured; FABs are "
            "kept there too), anything else is a SQLite file, created if missing.",
        ),
    ] = _default("database"),
    storage_dir: Annotated[
        str | None,
        typer.Option(
            metavar=_PATH,
            show_default="<Flower home>/superlink/ffs",
            help="Directory for uploaded FABs (Flower File Storage). Flower home is "
            "`$FLWR_HOME`, else `$XDG_DATA_HOME/.flwr`, else `~/.flwr`. Not used with a "
            "PostgreSQL --database, which keeps FABs itself.",
        ),
    ] = None,
    auth_list_public_keys: Annotated[
        str | None,
        typer.Option(
            metavar=_PATH,
            show_default=False,
            help="CSV file of the OpenSSH EC public keys of the SuperNodes allowed to "
            "connect over grpc-rere; without it any correctly signed SuperNode may connect "
            "(automatic node authentication).",
        ),
    ] = _default("auth_list_public_keys"),
    auth_superlink_private_key: Annotated[
        str | None,
        typer.Option(
            metavar=_PATH,
            show_default=False,
            help="Deprecated in flower-superlink 1.18.0: accepted and ignored with a warning.",
        ),
    ] = _default("auth_superlink_private_key"),
    auth_superlink_public_key: Annotated[
        str | None,
        typer.Option(
            metavar=_PATH,
            show_default=False,
            help="Deprecated in flower-superlink 1.18.0: accepted and ignored with a warning.",
        ),
    ] = _default("auth_superlink_public_key"),
    serverappio_api_address: Annotated[
        str,
        typer.Option(
            metavar=_ADDRESS,
            help="Bind address of the ServerAppIo API (plaintext gRPC unless "
            "--serverappio-tls), which flwr-serverapp dials. The host may be IPv4, IPv6 or "
            "a name.",
        ),
    ] = _default("serverappio_api_address"),
    serverappio_tls: Annotated[
        bool,
        typer.Option(
            "--serverappio-tls",
            help="(superlink-async only) Serve the ServerAppIo API over TLS too, with the "
            "--ssl-* files. Only for ServerApps you start yourself (--isolation process): "
            "flwr-serverapp 1.18.0 cannot dial TLS (it exits with code 602 without "
            "--insecure), so this is refused with --isolation subprocess and with --insecure.",
        ),
    ] = _default("serverappio_tls"),
    fleet_api_type: Annotated[
        str,
        typer.Option(
            click_type=FleetApiTypes(),
            help="Transport of the Fleet API that SuperNodes connect to. (superlink-async) "
            "Several, separated by commas (e.g. grpc-rere,rest), are served side by side "
            "from one process and one state.",
        ),
    ] = _default("fleet_api_type"),
    fleet_api_address: Annotated[
        str | None,
        typer.Option(
            metavar=_ADDRESS,
            show_default=f"{DEFAULT_FLEET_GRPC_ADDRESS}, or {DEFAULT_FLEET_REST_ADDRESS} for rest",
            help="Bind address of the Fleet API. With several --fleet-api-type values, one "
            "address per type, separated by commas, in the same order.",
        ),
    ] = _default("fleet_api_address"),
    fleet_api_num_workers: Annotated[
        int,
        typer.Option(
            help="Accepted for compatibility; as in flower-superlink 1.18.0, any value other "
            "than 1 is warned about and one worker is used.",
        ),
    ] = _default("fleet_api_num_workers"),
    exec_api_address: Annotated[
        str,
        typer.Option(
            metavar=_ADDRESS,
            help="Bind address of the Exec API, which the `flwr` CLI dials.",
        ),
    ] = _default("exec_api_address"),
    executor: Annotated[
        str,
        typer.Option(
            help="Executor that turns `flwr run` requests into runs: "
            f"`{DEPLOYMENT_EXECUTOR}` (ServerApps on SuperNodes) or "
            f"`{SIMULATION_EXECUTOR}` (simulations with flwr-simulation; no Fleet API). "
            "Other executor objects are refused.",
        ),
    ] = _default("executor"),
    executor_dir: Annotated[
        str,
        typer.Option(
            metavar=_PATH,
            help="Directory from which the reference imports a custom executor; accepted "
            "for compatibility, unused because both executors are built in.",
        ),
    ] = _default("executor_dir"),
    executor_config: Annotated[
        str | None,
        typer.Option(
            show_default=False,
            help="Executor settings as space-separated key=value pairs of TOML scalars, e.g. "
            "'root-certificates=\"ca.crt\"' (checked as the deployment executor checks it; "
            "the simulation executor ignores every setting).",
        ),
    ] = _default("executor_config"),
    simulationio_api_address: Annotated[
        str,
        typer.Option(
            metavar=_ADDRESS,
            help="Bind address of the SimulationIo API (always plaintext), which "
            "flwr-simulation dials; served by the simulation executor only.",
        ),
    ] = _default("simulationio_api_address"),
    serverapp_command: Annotated[
        Sequence[str] | None,
        _child_command_option("flwr-serverapp", "--serverappio-api-address", "the deployment"),
    ] = None,
    simulation_command: Annotated[
        Sequence[str] | None,
        _child_command_option("flwr-simulation", "--simulationio-api-address", "the simulation"),
    ] = None,
    shutdown_grace: Annotated[
        float,
        typer.Option(
            min=0.0,
            metavar="SECONDS",
            help="(superlink-async only) Seconds that calls in flight may take to finish "
            "after a stop signal before they are cancelled.",
        ),
    ] = _default("shutdown_grace"),
    max_message_bytes: Annotated[
        int,
        typer.Option(
            min=1,
            max=MAX_MESSAGE_BYTES,
            metavar="BYTES",
            help="(superlink-async only) Largest request accepted: a gRPC message on any API, "
            "or a REST body. Larger ones are refused (RESOURCE_EXHAUSTED / 413) before they "
            "are buffered. The default is the reference's gRPC limit, 2 GiB - 1.",
        ),
    ] = _default("max_message_bytes"),
    metrics_address: Annotated[
        str | None,
        typer.Option(
            metavar=_ADDRESS,
            show_default=False,
            help="(superlink-async only) Serve Prometheus metrics at http://HOST:PORT/metrics. "
            "Off unless given.",
        ),
    ] = _default("metrics_address"),
    log_format: Annotated[
        str,
        typer.Option(
            click_type=click.Choice(LOG_FORMATS),
            help="(superlink-async only) 'default' is flower-superlink's coloured console "
            "format; 'json' writes one JSON object per line, with run_id and node_id fields "
            "where they apply.",
        ),
    ] = _default("log_format"),
    log_level: Annotated[
        str | None,
        typer.Option(
            click_type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
            show_default="$FLWR_LOG_LEVEL, else INFO",
            help="(superlink-async only) Lowest level that is logged.",
        ),
    ] = _default("log_level"),
    signature_workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            metavar="N",
            show_default="one per CPU but one with 4+ CPUs, else 0",
            help="(superlink-async only) Worker processes that check the signatures of node "
            "authentication while the event loop is behind, so that it serves other calls "
            "meanwhile. 0 checks them all on the event loop.",
        ),
    ] = _default("signature_workers"),
    overload_lag: Annotated[
        float,
        typer.Option(
            min=0.0,
            metavar="SECONDS",
            help="(superlink-async only) While the event loop runs this late, a poll "
            "(PullMessages) from a node with nothing waiting is answered at once, before its "
            "signature check, so that the fleet's polling cannot starve the ServerAppIo and "
            "Exec APIs. 0: never.",
        ),
    ] = _default("overload_lag"),
    max_fleet_in_flight: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="N",
            help="(superlink-async only) While this many Fleet calls are in flight, polls and "
            "registrations are answered UNAVAILABLE at once (SuperNodes retry it with "
            "backoff). 0: no bound.",
        ),
    ] = _default("max_fleet_in_flight"),
    skip_database_check: Annotated[
        bool,
        typer.Option(
            "--skip-database-check",
            help="(superlink-async only) Serve a --database file without first reading it "
            "whole with SQLite's quick_check (measured: up to 1.3 s per GB from the page cache, "
            "up to 9 s per GB from a cold disk). Without the check a corrupted file is served "
            "until a call meets the damage.",
        ),
    ] = False,
    database_pool_size: Annotated[
        int,
        typer.Option(
            min=1,
            metavar="N",
            help="(superlink-async only) Most connections to a PostgreSQL --database this "
            "process keeps open; every process counts against the server's max_connections.",
        ),
    ] = _default("database_pool_size"),
    replica_id: Annotated[
        str | None,
        typer.Option(
            metavar="ID",
            show_default="<short hostname>-<8 hex chars>, new at every start",
            help="(superlink-async only) This process's name among the SuperLink replicas "
            "sharing one --database: its lease, the runs it claims, its log lines (JSON) and "
            "metrics carry it. 1-64 letters, digits, '.', '_' or '-'. Give each process an id "
            "of its own that it keeps across restarts (e.g. its pod name): a restart then "
            "fails the runs its predecessor left at once, where a new id leaves them to the "
            "lease's expiry. Two live processes must never share an id.",
        ),
    ] = None,
    replica_lease: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            help="(superlink-async only) How long this replica's lease in the database lasts; "
            "it is renewed every quarter of it. When a replica stops renewing (it died), "
            "another finishes its starting and running runs as failed within this time plus "
            "a quarter of its own lease.",
        ),
    ] = _default("replica_lease"),
    event_loop: Annotated[
        str,
        typer.Option(
            click_type=click.Choice(EVENT_LOOPS),
            help="(superlink-async only) 'uvloop' (pip install 'superlink-async[uvloop]') "
            "spends less CPU per call, but when the server is overloaded it answers some "
            "connections and starves others (measured: new SuperNodes waited over 14 s); "
            "asyncio's loop slows every connection evenly.",
        ),
    ] = "asyncio",
) -> None:
    """Start a Flower SuperLink: a drop-in replacement for flower-superlink 1.18.0."""
    _start(
        Config(
            insecure=insecure,
            ssl_certfile=_optional_path(ssl_certfile),
            ssl_keyfile=_optional_path(ssl_keyfile),
            ssl_ca_certfile=_optional_path(ssl_ca_certfile),
            flwr_dir=flwr_dir,
            isolation=isolation,
            database=database,
            storage_dir=default_storage_dir() if storage_dir is None else Path(storage_dir),
            auth_list_public_keys=_optional_path(auth_list_public_keys),
            auth_superlink_private_key=_optional_path(auth_superlink_private_key),
            auth_superlink_public_key=_optional_path(auth_superlink_public_key),
            serverappio_api_address=serverappio_api_address,
            serverappio_tls=serverappio_tls,
            fleet_api_type=fleet_api_type,
            fleet_api_address=fleet_api_address,
            fleet_api_num_workers=fleet_api_num_workers,
            exec_api_address=exec_api_address,
            executor=executor,
            executor_dir=executor_dir,
            executor_config=executor_config,
            simulationio_api_address=simulationio_api_address,
            serverapp_command=tuple(serverapp_command or default_serverapp_command()),
            simulation_command=tuple(simulation_command or default_simulation_command()),
            shutdown_grace=shutdown_grace,
            max_message_bytes=max_message_bytes,
            log_format=log_format,
            metrics_address=metrics_address,
            log_level=log_level,
            signature_workers=signature_workers,
            overload_lag=overload_lag,
            max_fleet_in_flight=max_fleet_in_flight,
            check_database=not skip_database_check,
            database_pool_size=database_pool_size,
            replica_id=default_replica_id() if replica_id is None else replica_id,
            replica_lease=replica_lease,
        ),
        event_loop,
    )


def _optional_path(value: str | None) -> Path | None:
    """An empty path counts as not given, as it does for the reference's truthiness checks."""
    return Path(value) if value else None


def _start(config: Config, event_loop: str = "asyncio") -> None:
    """Log, warn and check as ``flower-superlink`` does, then serve until the exit code is known.

    Every end of the server arrives as ``SuperLinkExit``; its message is logged (ERROR for
    failures) and the process ends with its status. Options that cannot be used end as
    their ``ConfigError`` says; a database that cannot be used is one ERROR line. Status 1.
    """
    configure_logging(config.log_level, log_format=config.log_format, replica=config.replica_id)
    logger.info("Starting Flower SuperLink")
    if config.flwr_dir is not None:
        logger.warning("The `--flwr-dir` option is currently not in use and will be ignored.")
    try:
        config.check(warn=logger.warning)
        # Imported here so that `--help` and rejected options don't load the server stack.
        from superlink_async.runtime import serve  # noqa: PLC0415
        from superlink_async.runtime.process import run_server  # noqa: PLC0415

        run_server(lambda: serve(config), event_loop)
    except SuperLinkExit as exc:
        logger.log(logging.ERROR if exc.is_failure else logging.INFO, exc.args[0])
        sys.exit(exc.process_status)
    except ConfigError as exc:
        _refuse(exc)
    except (StateError, IncompatibleLibraryError) as exc:
        logger.error("%s", exc)
        sys.exit(1)


def _refuse(error: ConfigError) -> NoReturn:
    """End start-up the way the reference ends on this error, with status 1."""
    if error.plain:
        sys.exit(str(error))  # the bare text on stderr, no log format
    if error.exit_code is None:
        logger.error("%s", error)
    else:
        logger.error("%s", format_exit_message(error.exit_code, str(error)))
    sys.exit(1)


def main() -> None:
    """Console-script entry point (``superlink-async``; also ``python -m superlink_async``)."""
    app()
