"""The command line: flower-superlink 1.18.0's options, defaults, checks, texts and statuses.

Option names, defaults and choices are read from the installed flwr 1.18.0 at test time, and
failing start-ups are compared byte for byte with the real flower-superlink, so a drift in
either cannot hide. The texts spelled out here pin the lines operators grep for.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import click
import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from superlink_async import cli_docs
from superlink_async.cli import app
from superlink_async.config import (
    SIMULATION_EXECUTOR,
    Config,
    default_serverapp_command,
    default_simulation_command,
)
from superlink_async.exit_codes import ExitCode, SuperLinkExit, format_exit_message
from superlink_async.logs import FlwrConsoleFormatter, logger
from superlink_async.tls import CertificateFiles

OUR_OPTIONS = {
    "--serverapp-command",
    "--simulation-command",
    "--shutdown-grace",
    "--serverappio-tls",
    "--max-message-bytes",
    "--log-format",
    "--log-level",
    "--metrics-address",
    "--signature-workers",
    "--overload-lag",
    "--max-fleet-in-flight",
    "--event-loop",
    "--skip-database-check",
    "--database-pool-size",
    "--replica-id",
    "--replica-lease",
}
OUR_FIELDS = {
    "serverapp_command",
    "simulation_command",
    "shutdown_grace",
    "serverappio_tls",
    "max_message_bytes",
    "log_format",
    "log_level",
    "metrics_address",
    "signature_workers",
    "overload_lag",
    "max_fleet_in_flight",
    "check_database",
    "database_pool_size",
    "replica_id",
    "replica_lease",
}
SSL_FLAGS = ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile")
ADDRESS_FLAGS = (
    "--serverappio-api-address",
    "--fleet-api-address",
    "--exec-api-address",
    "--simulationio-api-address",
)
REFERENCE = Path(sys.executable).with_name("flower-superlink")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def reference_parser() -> argparse.ArgumentParser:
    """flower-superlink 1.18.0's own argparse parser."""
    from flwr.server.app import _parse_args_run_superlink  # noqa: PLC0415

    parser: argparse.ArgumentParser = _parse_args_run_superlink()
    return parser


@pytest.fixture(autouse=True)
def _restore_logger() -> Iterator[None]:
    """The CLI points our logger at the runner's stream; other tests must get it back."""
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture(autouse=True)
def _untuned_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's tuning is process-wide: not for the test process (tests/runtime pins it)."""
    monkeypatch.setattr("superlink_async.runtime.process.tune_gc", lambda: None)
    monkeypatch.setattr("superlink_async.transports.grpc.speedups.install", lambda: None)
    monkeypatch.setattr("superlink_async.runtime.process.raise_file_limit", lambda: None)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """Stand in for the server: record the config, then end as after a SIGTERM."""
    configs: list[Config] = []

    async def serve(config: Config) -> None:
        configs.append(config)
        raise SuperLinkExit(ExitCode.GRACEFUL_EXIT_SIGTERM, "SuperLink terminated gracefully.")

    monkeypatch.setattr("superlink_async.runtime.serve", serve)
    return configs


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def plain(output: str) -> str:
    return ANSI.sub("", output)


def logged(level: int, message: str) -> str:
    """How our logger renders one record, colours stripped: what the output must contain."""
    record = logging.LogRecord("superlink_async", level, __file__, 0, message, None, None)
    return plain(FlwrConsoleFormatter(with_time=False).format(record))


def reference_options(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for action in parser._actions for opt in action.option_strings}


def reference_choices(parser: argparse.ArgumentParser, option: str) -> tuple[str, ...]:
    return tuple(parser._option_string_actions[option].choices or ())


def our_options() -> dict[str, click.Parameter]:
    command = typer.main.get_command(app)
    ctx = command.make_context("superlink-async", [])
    return {opt: param for param in command.get_params(ctx) for opt in param.opts}


# --- options, defaults and choices -------------------------------------------------------


def test_option_names_are_flower_superlinks_plus_ours(
    reference_parser: argparse.ArgumentParser,
) -> None:
    """Every flower-superlink 1.18.0 option (and -h) exists; the only extras are ours."""
    assert set(our_options()) == reference_options(reference_parser) | OUR_OPTIONS


def test_isolation_choices_equal_the_reference(
    reference_parser: argparse.ArgumentParser,
) -> None:
    """--isolation accepts exactly the reference's values."""
    param_type = our_options()["--isolation"].type
    assert isinstance(param_type, click.Choice)
    assert tuple(param_type.choices) == reference_choices(reference_parser, "--isolation")


def test_every_reference_fleet_api_type_is_accepted_alone_or_listed(
    reference_parser: argparse.ArgumentParser, served: list[Config]
) -> None:
    """Each of the reference's --fleet-api-type values works as is; ours also takes lists."""
    types = reference_choices(reference_parser, "--fleet-api-type")
    for kind in types:
        assert invoke("--insecure", "--fleet-api-type", kind).exit_code == 0
    listed = ",".join(types)
    addresses = "127.0.0.1:9201,127.0.0.1:9202,127.0.0.1:9203"
    result = invoke("--insecure", "--fleet-api-type", listed, "--fleet-api-address", addresses)
    assert result.exit_code == 0, result.output
    assert [listener.api_type for listener in served[-1].fleet_listeners()] == list(types)


def test_fleet_types_without_enough_addresses_are_one_error_line(served: list[Config]) -> None:
    """Two gRPC transports would both default to port 9092: refused before serving."""
    result = invoke("--insecure", "--fleet-api-type", "grpc-rere,grpc-adapter")
    assert result.exit_code == 1
    assert "would bind the same address" in last_error_line(result)
    assert not served


def test_defaults_equal_the_reference(
    reference_parser: argparse.ArgumentParser, served: list[Config]
) -> None:
    """Without options, every setting is the reference's default (paths compared as text)."""
    result = invoke("--insecure")
    assert result.exit_code == 0, result.output
    (config,) = served
    reference = vars(reference_parser.parse_args(["--insecure"]))
    assert {f.name for f in fields(Config)} - OUR_FIELDS == set(reference)

    def text(value: object) -> object:
        return str(value) if isinstance(value, Path) else value

    assert {name: text(getattr(config, name)) for name in reference} == {
        name: text(value) for name, value in reference.items()
    }


def test_our_options_default_to_flwr_serverapp_and_five_seconds(served: list[Config]) -> None:
    """--serverapp-command defaults to flwr-serverapp; --shutdown-grace to 5 seconds."""
    assert invoke("--insecure").exit_code == 0
    assert served[0].serverapp_command == default_serverapp_command()
    assert served[0].shutdown_grace == 5.0


def test_options_reach_the_config(served: list[Config], tmp_path: Path) -> None:
    """Each given value lands in its Config field; the command string is split like a shell."""
    result = invoke(
        "--insecure",
        "--isolation=process",
        "--database",
        str(tmp_path / "state.db"),
        "--storage-dir",
        str(tmp_path / "ffs"),
        "--fleet-api-address",
        "[::1]:9999",
        "--executor-config",
        "verbose=true",
        "--serverapp-command",
        "python -m 'my app'",
        "--shutdown-grace",
        "0.5",
    )
    assert result.exit_code == 0, result.output
    (config,) = served
    assert config.isolation == "process"
    assert config.database == str(tmp_path / "state.db")
    assert config.storage_dir == tmp_path / "ffs"
    assert config.fleet_address == "[::1]:9999"
    assert config.executor_config == "verbose=true"
    assert config.serverapp_command == ("python", "-m", "my app")
    assert config.shutdown_grace == 0.5


def test_signature_workers_reach_the_config(served: list[Config]) -> None:
    """None (one per CPU but one, with 4+ CPUs) unless given; 0 checks on the loop."""
    assert invoke("--insecure").exit_code == 0
    assert invoke("--insecure", "--signature-workers", "0").exit_code == 0
    assert [config.signature_workers for config in served] == [None, 0]
    assert invoke("--insecure", "--signature-workers", "-1").exit_code == 2


def test_a_requested_uvloop_that_is_missing_is_one_error_line(
    served: list[Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)
    result = invoke("--insecure", "--event-loop", "uvloop")
    assert result.exit_code == 1
    assert "needs uvloop: pip install 'superlink-async[uvloop]'" in last_error_line(result)
    assert served == []


def test_unique_prefix_of_a_long_option_is_accepted_as_by_argparse(
    served: list[Config],
) -> None:
    """`--insec` is `--insecure` and `--fleet-api-addr` is `--fleet-api-address`."""
    result = invoke("--insec", "--fleet-api-addr", "127.0.0.1:1234")
    assert result.exit_code == 0, result.output
    assert served[0].insecure
    assert served[0].fleet_address == "127.0.0.1:1234"


@pytest.mark.parametrize(
    "args",
    [
        ["--isolation", "thread"],
        ["--fleet-api-type", "grpc-bidi"],
        ["--fleet-api-num-workers", "two"],
        ["--shutdown-grace", "-1"],
        ["--serverapp-command", ""],
        ["--serverapp-command", "flwr-serverapp 'unbalanced"],
        ["--no-such-option"],
        ["--exec", "0.0.0.0:1"],  # ambiguous: --exec-api-address, --executor, ...
    ],
)
def test_usage_errors_exit_with_status_2_before_starting(
    args: list[str], served: list[Config]
) -> None:
    """Invalid choices, values and options are usage errors (status 2, like argparse)."""
    result = invoke("--insecure", *args)
    assert result.exit_code == 2, result.output
    assert "Starting Flower SuperLink" not in result.output
    assert not served


def test_help_is_available_as_h_and_help() -> None:
    """-h and --help print the option list and exit 0, as flower-superlink's do."""
    for flag in ("-h", "--help"):
        result = invoke(flag)
        assert result.exit_code == 0
        assert "--fleet-api-type" in result.output


# --- start-up lines, warnings and exits ---------------------------------------------------


def test_start_up_lines_and_warnings_come_in_the_reference_order(served: list[Config]) -> None:
    """First line, then the --flwr-dir, --insecure, worker and deprecated-key warnings."""
    result = invoke(
        "--insecure",
        "--flwr-dir",
        "apps",
        "--fleet-api-num-workers",
        "4",
        "--auth-superlink-private-key",
        "key",
    )
    assert result.exit_code == 0, result.output
    lines = plain(result.output).splitlines()
    assert lines[0] == logged(logging.INFO, "Starting Flower SuperLink")
    assert lines[1] == logged(
        logging.WARNING, "The `--flwr-dir` option is currently not in use and will be ignored."
    )
    assert lines[2].startswith(logged(logging.WARNING, "Option `--insecure` was set."))
    assert lines[3] == logged(
        logging.WARNING,
        "The Fleet API currently supports only 1 worker. You have specified 4 workers. "
        "Support for multiple workers will be added in future releases. "
        "Proceeding with a single worker.",
    )
    assert lines[4].startswith(
        logged(logging.WARNING, "The `--auth-superlink-private-key` and")
    ) and lines[4].endswith("Node authentication no longer requires these arguments.")


def test_graceful_end_logs_info_and_exits_0(served: list[Config]) -> None:
    """A graceful SuperLinkExit (code < 100) is logged at INFO and gives status 0."""
    result = invoke("--insecure")
    assert result.exit_code == 0
    assert plain(result.output).endswith(
        logged(logging.INFO, "SuperLink terminated gracefully.") + "\n"
    )


def test_failed_end_logs_the_exit_block_at_error_and_exits_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failing SuperLinkExit (code >= 100) logs its whole block at ERROR; status 1."""
    crash = SuperLinkExit(ExitCode.SUPERLINK_THREAD_CRASH, "Task fleet crashed: boom")

    async def serve(config: Config) -> None:
        raise crash

    monkeypatch.setattr("superlink_async.runtime.serve", serve)
    result = invoke("--insecure")
    assert result.exit_code == 1
    assert logged(logging.ERROR, crash.args[0]) in plain(result.output)


def test_flwr_log_level_is_honoured(monkeypatch: pytest.MonkeyPatch, served: list[Config]) -> None:
    """FLWR_LOG_LEVEL=WARNING hides the INFO lines but keeps the warnings."""
    monkeypatch.setenv("FLWR_LOG_LEVEL", "WARNING")
    output = plain(invoke("--insecure").output)
    assert "Starting Flower SuperLink" not in output
    assert "Option `--insecure` was set." in output


@pytest.mark.parametrize("flag", ADDRESS_FLAGS)
@pytest.mark.parametrize("address", ["no-port", "127.0.0.1:70000", "[::1]:"])
def test_bad_address_exits_600_before_serving(
    flag: str, address: str, served: list[Config]
) -> None:
    """An unparsable address in any address flag logs the exit-600 block; status 1."""
    result = invoke("--insecure", flag, address)
    assert result.exit_code == 1
    block = format_exit_message(
        ExitCode.COMMON_ADDRESS_INVALID, f"Address ({address}) cannot be parsed."
    )
    assert logged(logging.ERROR, block) in plain(result.output)
    assert not served


# --- certificates and what is not supported yet -------------------------------------------


def test_no_certificates_without_insecure_is_an_error(served: list[Config]) -> None:
    """Neither --insecure nor certificates: the reference's ERROR line and status 1."""
    result = invoke()
    assert result.exit_code == 1
    assert logged(
        logging.ERROR,
        "Certificates are required unless running in insecure mode. Please provide "
        "certificate paths to `--ssl-certfile`, `--ssl-keyfile`, and `\u2014-ssl-ca-certfile` "
        "or run the server in insecure mode using '--insecure' if you understand the risks.",
    ) in plain(result.output)
    assert not served


def test_some_but_not_all_certificates_is_an_error(served: list[Config]) -> None:
    """One or two of the three --ssl-* files: the reference's plain exit text, status 1."""
    result = invoke("--ssl-certfile", "cert.pem", "--ssl-keyfile", "key.pem")
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        "You need to provide valid file paths to `--ssl-certfile`, `--ssl-keyfile`, and "
        "`\u2014-ssl-ca-certfile` to create a secure connection in Fleet API server (gRPC-rere)."
    )
    assert not served


@pytest.fixture
def certificates(tmp_path: Path) -> dict[str, Path]:
    """The three --ssl-* flags, each naming an existing file."""
    files = {flag: tmp_path / flag.strip("-") for flag in SSL_FLAGS}
    for path in files.values():
        path.write_text("PEM")
    return files


def as_args(files: dict[str, Path]) -> list[str]:
    return [part for flag, path in files.items() for part in (flag, str(path))]


@pytest.mark.parametrize("missing", SSL_FLAGS)
def test_certificate_that_is_not_a_file_is_named(
    missing: str, certificates: dict[str, Path], served: list[Config]
) -> None:
    """A certificate path that is no file is named in the reference's text; status 1."""
    certificates[missing].unlink()
    result = invoke(*as_args(certificates))
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == f"Path argument `{missing}` does not point to a file."
    assert not served


def last_error_line(result: Result) -> str:
    """Status 1, and the last line is one ERROR record (no traceback): its text."""
    assert result.exit_code == 1
    last = plain(result.output).splitlines()[-1]
    assert last.startswith(logged(logging.ERROR, ""))
    return last


def test_files_openssl_cannot_use_end_in_one_error_line(
    certificates: dict[str, Path], served: list[Config]
) -> None:
    """Files that pass the reference's checks but hold no PEM (the reference then dies with a
    gRPC traceback): one ERROR line naming the flag and the file; status 1."""
    last = last_error_line(invoke(*as_args(certificates)))
    assert f"--ssl-certfile {certificates['--ssl-certfile']} holds no PEM certificate" in last
    assert not served


def tls_args(files: CertificateFiles) -> list[str]:
    return as_args(
        {
            "--ssl-ca-certfile": files.ca_certfile,
            "--ssl-certfile": files.certfile,
            "--ssl-keyfile": files.keyfile,
        }
    )


def test_usable_certificates_start_without_the_insecure_warning(
    tls_files: CertificateFiles, served: list[Config]
) -> None:
    result = invoke(*tls_args(tls_files))
    assert result.exit_code == 0, result.output
    (config,) = served
    assert not config.insecure
    assert (config.ssl_certfile, config.ssl_keyfile, config.ssl_ca_certfile) == (
        tls_files.certfile,
        tls_files.keyfile,
        tls_files.ca_certfile,
    )
    assert "--insecure" not in result.output


def test_serverappio_tls_is_refused_with_subprocess_isolation(
    tls_files: CertificateFiles, served: list[Config]
) -> None:
    """The flwr-serverapp children of --isolation subprocess cannot dial TLS (code 602)."""
    last = last_error_line(invoke(*tls_args(tls_files), "--serverappio-tls"))
    assert "--serverappio-tls cannot be used with --isolation subprocess" in last
    assert not served


def test_serverappio_tls_reaches_the_config_with_process_isolation(
    tls_files: CertificateFiles, served: list[Config]
) -> None:
    result = invoke(*tls_args(tls_files), "--serverappio-tls", "--isolation", "process")
    assert result.exit_code == 0, result.output
    assert served[0].serverappio_tls


def test_the_simulation_executor_reaches_the_config(served: list[Config]) -> None:
    """`--executor flwr.superexec.simulation:executor` is served, launching flwr-simulation by
    default; `--simulation-command` is split like a shell; Fleet options are not read."""
    result = invoke(
        "--insecure",
        "--executor",
        SIMULATION_EXECUTOR,
        "--simulation-command",
        "python -m 'my sim'",
        "--fleet-api-type",
        "grpc-rere,grpc-adapter",  # would be refused (same address) in deployment mode
    )
    assert result.exit_code == 0, result.output
    (config,) = served
    assert config.simulation
    assert config.simulation_command == ("python", "-m", "my sim")
    assert invoke("--insecure", "--executor", SIMULATION_EXECUTOR).exit_code == 0
    assert served[1].simulation_command == default_simulation_command()


@pytest.mark.parametrize(
    "executor", ["flwr.superexec.simulation:other", "my_project.executor:executor"]
)
def test_other_executors_are_refused_in_one_error_line(executor: str, served: list[Config]) -> None:
    """Any other executor object is refused before serving, naming the two that are served
    and why arbitrary executors are not."""
    result = invoke("--insecure", "--executor", executor)
    line = last_error_line(result)
    assert f"`--executor {executor}` cannot be used" in line
    assert "flwr.superexec.deployment:executor" in line
    assert SIMULATION_EXECUTOR in line
    assert "flwr's own state classes" in line
    assert not served


def test_a_missing_root_certificates_file_is_one_error_line(
    served: list[Config], tmp_path: Path
) -> None:
    """The deployment executor reads `root-certificates` at start-up (the reference then dies
    with a traceback): a missing file is one ERROR line naming it, status 1."""
    missing = tmp_path / "missing-ca.crt"
    result = invoke("--insecure", "--executor-config", f'root-certificates="{missing}"')
    line = last_error_line(result)
    assert "root-certificates" in line
    assert str(missing) in line
    assert not served


def test_executor_config_that_is_not_toml_scalars_is_one_error_line(
    served: list[Config],
) -> None:
    """`--executor-config` is space-separated key=value TOML scalars; anything else: refused."""
    result = invoke("--insecure", "--executor-config", "verbose=yes-please")
    assert "--executor-config" in last_error_line(result)
    assert not served


def test_the_simulation_executor_ignores_executor_settings(served: list[Config]) -> None:
    """As in the reference, the simulation executor reads no setting (not even a CA file)."""
    result = invoke(
        "--insecure",
        "--executor",
        SIMULATION_EXECUTOR,
        "--executor-config",
        'root-certificates="/nonexistent/ca.crt"',
    )
    assert result.exit_code == 0, result.output
    assert served


# --- the real process, next to the real flower-superlink ----------------------------------


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    env.pop("FLWR_LOG_LEVEL", None)
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--serverappio-api-address", "nohost"], id="bad-serverappio"),
        pytest.param(["--exec-api-address", "[::1]:99999"], id="bad-exec"),
        pytest.param(["--simulationio-api-address", "host:"], id="bad-simulationio"),
        pytest.param(["--flwr-dir", "x", "--exec-api-address", "bad"], id="warning-then-bad"),
        pytest.param([], id="no-certificates"),
        pytest.param(["--ssl-keyfile", "key.pem"], id="some-certificates"),
        pytest.param(
            ["--ssl-certfile", "a", "--ssl-keyfile", "b", "--ssl-ca-certfile", "c"],
            id="certificate-not-a-file",
        ),
    ],
)
def test_failing_start_is_byte_identical_to_flower_superlink(
    args: list[str], tmp_path: Path
) -> None:
    """`python -m superlink_async` fails as flower-superlink does: same stderr, same status.

    Only start-ups that the reference ends before binding a port are compared.
    """
    ours = run([sys.executable, "-m", "superlink_async", *args], tmp_path)
    reference = run([str(REFERENCE), *args], tmp_path)
    assert (ours.returncode, ours.stdout, ours.stderr) == (
        reference.returncode,
        reference.stdout,
        reference.stderr,
    )
    assert ours.returncode == 1


def test_invalid_choice_in_the_real_process_exits_2(tmp_path: Path) -> None:
    """`python -m superlink_async --isolation thread` is a usage error with status 2."""
    result = run([sys.executable, "-m", "superlink_async", "--isolation", "thread"], tmp_path)
    assert result.returncode == 2
    assert "Invalid value for '--isolation'" in result.stderr


# --- generated documentation --------------------------------------------------------------


def test_configuration_reference_is_generated_from_the_cli() -> None:
    """docs/configuration.md equals `python -m superlink_async.cli_docs` output.

    Regenerate it with that command after changing an option.
    """
    committed = Path(__file__).parents[1] / "docs" / "configuration.md"
    assert committed.read_text(encoding="utf-8") == cli_docs.render()


def test_configuration_reference_lists_every_option() -> None:
    """Each long option appears in the generated table, help excluded."""
    page = cli_docs.render()
    for option in our_options():
        if option.startswith("--") and option != "--help":
            assert f"| `{option}` |" in page


def test_a_missing_key_list_exits_with_the_reference_text(
    tmp_path: Path, served: list[Config]
) -> None:
    missing = tmp_path / "keys.csv"
    result = invoke("--insecure", "--auth-list-public-keys", str(missing))
    assert result.exit_code == 1
    assert f"known public keys CSV file does not exist: {missing}." in result.output
    assert not served


def test_a_key_list_with_rest_is_refused_in_one_error_line(
    tmp_path: Path, served: list[Config]
) -> None:
    """REST SuperNodes cannot sign their calls: with a key list they would bypass it."""
    keys = tmp_path / "keys.csv"
    keys.write_text("")
    result = invoke("--insecure", "--auth-list-public-keys", str(keys), "--fleet-api-type", "rest")
    assert result.exit_code == 1
    assert "--auth-list-public-keys cannot be used with --fleet-api-type rest" in last_error_line(
        result
    )
    assert not served


def test_json_logs_are_one_object_per_line(served: list[Config]) -> None:
    """--log-format json: every line parses as JSON with time, level, logger and message,
    and names the replica (--replica-id)."""
    result = invoke(
        "--insecure", "--log-format", "json", "--log-level", "debug", "--replica-id", "link-a"
    )
    assert result.exit_code == 0, result.output
    entries = [json.loads(line) for line in result.output.splitlines() if line.strip()]
    assert entries[0]["message"] == "Starting Flower SuperLink"
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    assert entries[-1]["message"] == "SuperLink terminated gracefully."
    assert {entry["replica"] for entry in entries} == {"link-a"}


def test_replica_options_reach_the_config_and_an_id_is_made_up_otherwise(
    served: list[Config],
) -> None:
    """--replica-id and --replica-lease land in the Config. Without an id, each start gets
    a new one, ``<short hostname>-<8 hex chars>``; the lease defaults to 20 s."""
    assert (
        invoke("--insecure", "--replica-id", "link-a.1_B", "--replica-lease", "2.5").exit_code == 0
    )
    assert invoke("--insecure").exit_code == 0
    assert invoke("--insecure").exit_code == 0
    given, first, second = served
    assert (given.replica_id, given.replica_lease) == ("link-a.1_B", 2.5)
    host, _, suffix = first.replica_id.rpartition("-")
    assert host == socket.gethostname().partition(".")[0] and re.fullmatch("[0-9a-f]{8}", suffix)
    assert first.replica_id != second.replica_id
    assert first.replica_lease == 20.0


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--replica-id", ""], "--replica-id '': give 1-64 characters"),
        (["--replica-id", "link a"], "--replica-id 'link a': give 1-64 characters"),
        (["--replica-id", "x" * 65], "give 1-64 characters of letters, digits, '.', '_' and '-'"),
        (["--replica-lease", "0"], "--replica-lease 0.0: give a finite number of seconds above 0"),
        (["--replica-lease", "-3"], "--replica-lease -3.0: give a finite number"),
        (["--replica-lease", "inf"], "--replica-lease inf: give a finite number"),
        (["--replica-lease", "nan"], "--replica-lease nan: give a finite number"),
    ],
)
def test_an_unusable_replica_id_or_lease_is_one_error_line(
    args: list[str], error: str, served: list[Config]
) -> None:
    """A replica id that would not fit log lines, metrics labels and run details, or a
    lease that cannot lapse, is refused in one ERROR line, status 1, before serving."""
    result = invoke("--insecure", *args)
    assert error in last_error_line(result)
    assert not served
