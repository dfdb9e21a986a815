"""The container set-up (Dockerfile, docker-compose.yml) against the code it runs.

No Docker engine is needed: the files are parsed, and what they ask of the program (its CLI
commands and options, its settings) is checked against the program itself.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from typer.testing import CliRunner

from services.cli import app
from shared import db
from shared.migrate import ROOT
from shared.settings import Settings
from tests.system import ADMIN_KEY

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
PREFIX = "CREATOR_ACTIVITY_"
SERVERS = {"ingest": 8001, "scoring": 8002, "badges": 8003}  # service -> published port
APP_SERVICES = ["migrate", *SERVERS]
CONTAINER_PORT = 8000
ADMIN_KEY_VARIABLE = f"{PREFIX}BOOTSTRAP_ADMIN_KEY"


def load_compose() -> dict:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(compose, dict)
    return compose


def services() -> dict[str, dict]:
    return load_compose()["services"]


def environment(service: dict) -> dict[str, str]:
    """A service's environment, in either of the two compose forms (mapping or KEY=VALUE)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


class MissingVariable(Exception):
    """`${NAME:?message}` or `${NAME?message}` with NAME not set (or empty, for `:?`)."""


_VARIABLE = re.compile(r"\$(?:(\$)|\{(\w+)(?:(:?[-?+])([^}]*))?\}|(\w+))")


def interpolate(value: str, env: Mapping[str, str] | None = None) -> str:
    """Compose's interpolation against `env` (default: an empty environment): `$$`, `$NAME`,
    `${NAME}`, and `${NAME<op>word}` with op `:-`/`-` (default), `:?`/`?` (required, the word
    is the error) and `:+`/`+` (alternative); with the colon, an empty value counts as unset."""
    env = {} if env is None else env

    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            return "$"
        name = match.group(2) or match.group(5)
        op, word = match.group(3), match.group(4) or ""
        current = env.get(name)
        if op is None:
            return current or ""
        present = bool(current) if op.startswith(":") else current is not None
        if op.endswith("-"):
            return current if present else word
        if op.endswith("?"):
            if not present:
                raise MissingVariable(f"required variable {name} is missing a value: {word}")
            return current
        return word if present else ""

    return _VARIABLE.sub(replace, value)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [
        line
        for line in DOCKERFILE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        keyword, _, args = line.strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def dockerfile_json(keyword: str) -> list[str]:
    """The exec (JSON) form of the last ENTRYPOINT or CMD, as Docker keeps only the last."""
    values = [args for kw, args in dockerfile_instructions() if kw == keyword]
    assert values, f"the Dockerfile has no {keyword}"
    return json.loads(values[-1])


def container_port(command: list[str]) -> int:
    return int(command[command.index("--port") + 1])


# --- docker-compose.yml -------------------------------------------------------------------------


def test_compose_file_has_every_service() -> None:
    # prometheus and grafana: the dashboards (tests/test_dashboards.py)
    assert set(services()) >= {"postgres", "kafka", *APP_SERVICES, "prometheus", "grafana"}


def test_compose_file_follows_the_compose_specification() -> None:
    """The official compose-spec JSON schema, bundled with check-jsonschema (no network)."""
    result = check_compose_schema(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_does_catch_a_broken_file(tmp_path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  app:\n    image: x\n    pull_policy: sometimes\n")
    assert check_compose_schema(broken).returncode != 0


def check_compose_schema(path: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
    return subprocess.run(
        [*command, str(path)], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_app_image_is_built_once_for_every_app_service() -> None:
    builders = [name for name in APP_SERVICES if "build" in services()[name]]
    assert builders == ["migrate"], "one service builds the image, the others run it"
    assert services()["migrate"]["build"] == "."
    images = {services()[name].get("image") for name in APP_SERVICES}
    assert len(images) == 1 and None not in images, images
    for name in APP_SERVICES:
        # a local name: never looked up in a registry (compose still builds it when missing)
        assert services()[name].get("pull_policy") == "never", name
    for name in SERVERS:  # so the builder is part of every `up` of a server
        assert "migrate" in services()[name]["depends_on"], name


def test_no_admin_key_ships_with_the_compose_file() -> None:
    for name in APP_SERVICES:
        value = environment(services()[name])[ADMIN_KEY_VARIABLE]
        for env in ({}, {ADMIN_KEY_VARIABLE: ""}):
            with pytest.raises(MissingVariable, match=f"{ADMIN_KEY_VARIABLE}.*32 characters"):
                interpolate(value, env)
        assert interpolate(value, {ADMIN_KEY_VARIABLE: ADMIN_KEY}) == ADMIN_KEY


def test_interpolation_follows_compose() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("$$SET ${SET} $SET ${UNSET}", env) == "$SET v v "
    assert [interpolate(f"${{{n}:-d}}", env) for n in ("SET", "EMPTY", "UNSET")] == ["v", "d", "d"]
    assert [interpolate(f"${{{n}-d}}", env) for n in ("SET", "EMPTY", "UNSET")] == ["v", "", "d"]
    assert [interpolate(f"${{{n}:+a}}", env) for n in ("SET", "EMPTY", "UNSET")] == ["a", "", ""]
    assert interpolate("${EMPTY?e}", env) == ""
    with pytest.raises(MissingVariable, match="UNSET is missing a value: say so"):
        interpolate("${UNSET?say so}", env)


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_command_is_a_cli_command(name: str) -> None:
    command = services()[name]["command"]
    assert isinstance(command, list) and command, f"{name}: command must be an exec-form list"
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, f"{name}: {command} is not accepted by the CLI\n{result.output}"


@pytest.mark.parametrize("name", list(SERVERS))
def test_servers_listen_on_every_interface_of_the_published_port(name: str) -> None:
    service = services()[name]
    command = service["command"]
    # Parse the arguments as the CLI would (types converted), without running the server.
    cli = typer.main.get_command(app)
    with cli.make_context("creator-activity", list(command), resilient_parsing=True) as root:
        sub = cli.get_command(root, command[0])
        assert sub is not None, f"{name}: unknown command {command[0]!r}"
        with sub.make_context(command[0], list(command[1:]), parent=root) as ctx:
            params = ctx.params
    assert params["host"] == "0.0.0.0", f"{name}: the CLI default 127.0.0.1 is unreachable"
    assert params["port"] == CONTAINER_PORT
    assert service["ports"] == [f"{SERVERS[name]}:{params['port']}"]


def test_every_creator_activity_variable_is_a_setting() -> None:
    fields = set(Settings.model_fields)
    seen = set()
    for name, service in services().items():
        for key in environment(service):
            if key.startswith(PREFIX):
                seen.add(key)
                field = key.removeprefix(PREFIX).lower()
                assert field in fields, f"{name}: {key} is not a Settings field (it is ignored)"
    assert seen, "the compose file sets no CREATOR_ACTIVITY_* variable"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_environment_makes_valid_settings(name: str, monkeypatch) -> None:
    for key in list(os.environ):
        if key.startswith(PREFIX):
            monkeypatch.delenv(key)
    shell = {ADMIN_KEY_VARIABLE: ADMIN_KEY}  # required from the environment (or .env)
    env = {key: interpolate(value, shell) for key, value in environment(services()[name]).items()}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()

    assert settings.database_url, f"{name}: without a URL it would start an embedded PostgreSQL"
    url = urlsplit(db.to_asyncpg_url(settings.database_url))
    postgres = environment(services()["postgres"])
    assert url.hostname == "postgres"
    assert url.port == 5432
    assert url.username == postgres["POSTGRES_USER"]
    assert url.password == postgres["POSTGRES_PASSWORD"]
    assert url.path == "/" + postgres["POSTGRES_DB"]

    assert settings.kafka_bootstrap, f"{name}: without Kafka it would use the embedded event log"
    assert [s.strip().split(":")[0] for s in settings.kafka_bootstrap.split(",")] == ["kafka"]
    assert settings.kafka_enable_idempotence is True
    assert settings.bootstrap_admin_key == ADMIN_KEY


def test_kafka_bootstrap_is_the_advertised_listener() -> None:
    kafka = environment(services()["kafka"])
    app_env = environment(services()["ingest"])
    advertised = kafka["KAFKA_ADVERTISED_LISTENERS"].split("//", 1)[1]
    assert app_env[f"{PREFIX}KAFKA_BOOTSTRAP"] == advertised
    # the services create their topics; with auto-creation a typo would make a new topic
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


@pytest.mark.parametrize("name", list(SERVERS))
def test_servers_wait_for_the_migration_and_the_infrastructure(name: str) -> None:
    depends_on = services()[name]["depends_on"]
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"
    assert depends_on["postgres"]["condition"] == "service_healthy"
    assert depends_on["kafka"]["condition"] == "service_healthy"


def test_migration_is_a_one_shot_job_after_postgres() -> None:
    migrate = services()["migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate.get("restart") == "no"  # the string: a bare `no` would be YAML false


def test_postgres_health_check_asks_over_tcp() -> None:
    """During the image's first-start initialisation PostgreSQL answers on its Unix socket only
    (and is then restarted): only a TCP check says that it really serves."""
    test = services()["postgres"]["healthcheck"]["test"]
    argv = shlex.split(test[1]) if test[0] == "CMD-SHELL" else list(test[1:])
    assert argv[0] == "pg_isready"
    host = argv[argv.index("-h") + 1] if "-h" in argv else None
    assert host == "127.0.0.1", argv
    postgres = environment(services()["postgres"])
    assert argv[argv.index("-U") + 1] == postgres["POSTGRES_USER"]
    assert argv[argv.index("-d") + 1] == postgres["POSTGRES_DB"]


def test_infrastructure_has_health_checks() -> None:
    for name in ("postgres", "kafka"):
        test = services()[name]["healthcheck"]["test"]
        assert test and test[0] in ("CMD", "CMD-SHELL"), name
    assert "pg_isready" in " ".join(services()["postgres"]["healthcheck"]["test"])
    assert "kafka-broker-api-versions.sh" in " ".join(services()["kafka"]["healthcheck"]["test"])


def test_named_volumes_are_declared() -> None:
    compose = load_compose()
    declared = set(compose.get("volumes") or {})
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: volume {source!r} is not declared"
    assert services()["postgres"].get("volumes"), "the database would not survive the container"


def test_bind_mounts_name_files_of_the_repository() -> None:
    """Prometheus's and Grafana's configuration come from deploy/: a typo would start them with
    an empty directory (Docker creates a missing source) instead of failing."""
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name}: {source} is not in the repository"


# --- Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_entrypoint_is_the_cli() -> None:
    assert dockerfile_json("ENTRYPOINT") == ["creator-activity"]
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^creator-activity = "services\.cli:main"$', pyproject, re.MULTILINE)


def test_dockerfile_default_command_is_a_cli_command() -> None:
    command = dockerfile_json("CMD")
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, f"{command} is not accepted by the CLI\n{result.output}"
    assert command[command.index("--host") + 1] == "0.0.0.0"


def test_dockerfile_health_check_uses_the_served_port() -> None:
    checks = [args for kw, args in dockerfile_instructions() if kw == "HEALTHCHECK"]
    assert len(checks) == 1
    assert f"127.0.0.1:{container_port(dockerfile_json('CMD'))}/healthz" in checks[0]
    for name in SERVERS:
        assert container_port(services()[name]["command"]) == container_port(dockerfile_json("CMD"))


def test_dockerfile_copies_only_existing_paths() -> None:
    copies = [args for kw, args in dockerfile_instructions() if kw == "COPY"]
    assert copies
    for args in copies:
        parts = [p for p in args.split() if not p.startswith("--")]
        sources, _destination = parts[:-1], parts[-1]
        assert sources, args
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: no such path in the repository"


def test_dockerfile_ships_what_the_migrations_need() -> None:
    """`migrate` finds alembic.ini at shared/migrate.py's ROOT: the parent of shared/. The image
    must hold alembic.ini and migrations/ next to shared/, and run shared/ from there (an
    editable install), not from site-packages."""
    assert (ROOT / "alembic.ini").is_file() and (ROOT / "migrations" / "env.py").is_file()
    instructions = dockerfile_instructions()
    copied = {
        Path(p.rstrip("/")).name
        for kw, args in instructions
        if kw == "COPY"
        for p in args.split()[:-1]
        if not p.startswith("--")
    }
    assert {"shared", "services", "migrations", "alembic.ini", "pyproject.toml"} <= copied
    installs = [args for kw, args in instructions if kw == "RUN" and "pip install" in args]
    assert any(re.search(r"pip install\b.*\s-e \.(\s|$)", args) for args in installs)


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [args for kw, args in dockerfile_instructions() if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
