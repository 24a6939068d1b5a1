"""Static checks of docker-compose.yml, Dockerfile.mage and .env.example.

Docker is not available where these tests run, so the files are parsed and
checked against the rules they must follow instead of being started.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile.mage"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"

# The subset of the Compose Specification this project uses. Unknown keys are
# rejected, so a misspelt key fails here instead of being ignored by Docker.
_STRINGS = {"type": "array", "items": {"type": "string"}}
SERVICE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "image": {"type": "string"},
        "build": {
            "type": "object",
            "additionalProperties": False,
            "required": ["context", "dockerfile"],
            "properties": {"context": {"type": "string"}, "dockerfile": {"type": "string"}},
        },
        "restart": {"enum": ["no", "always", "on-failure", "unless-stopped"]},
        "command": _STRINGS,
        "profiles": _STRINGS,
        "environment": {
            "type": "object",
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        },
        "ports": {
            "type": "array",
            "items": {"type": "string", "pattern": r"^127\.0\.0\.1:[^:]+:\d+$"},
        },
        "expose": _STRINGS,
        "volumes": {
            "type": "array",
            "items": {"type": "string", "pattern": r"^[^:]+:/[^:]*$"},
        },
        "depends_on": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["condition"],
                "properties": {
                    "condition": {
                        "enum": [
                            "service_started",
                            "service_healthy",
                            "service_completed_successfully",
                        ]
                    }
                },
            },
        },
        "healthcheck": {
            "type": "object",
            "additionalProperties": False,
            "required": ["test"],
            "properties": {
                "test": _STRINGS,
                "interval": {"type": "string"},
                "timeout": {"type": "string"},
                "retries": {"type": "integer"},
            },
        },
    },
    "anyOf": [{"required": ["image"]}, {"required": ["build"]}],
}
COMPOSE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["services", "volumes"],
    "properties": {
        "name": {"type": "string"},
        "services": {"type": "object", "additionalProperties": SERVICE_SCHEMA},
        "volumes": {"type": "object", "additionalProperties": {"type": "null"}},
    },
}


_VARIABLE = re.compile(r"\$\{(?P<name>[A-Z_]+)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")


def interpolate(text: str, values: dict[str, str]) -> str:
    """Expand `${NAME}`, `${NAME:-default}` and `${NAME:?error}` as Compose does."""

    def expand(match: re.Match[str]) -> str:
        value = values.get(match["name"], "")
        if value:
            return value
        if match["op"] == ":-":
            return match["arg"]
        raise AssertionError(f"{match['name']} is unset: {match['arg'] or 'no default'}")

    return _VARIABLE.sub(expand, text).replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict:
    """Return the compose file as Docker reads it, with .env copied from .env.example."""
    return yaml.safe_load(interpolate(COMPOSE.read_text(), env_example()))


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_compose_matches_schema(compose: dict) -> None:
    jsonschema.validate(compose, COMPOSE_SCHEMA)


def test_compose_has_postgres_pgadmin_and_mage(compose: dict) -> None:
    services = compose["services"]
    assert services["postgres"]["image"] == "postgres:15"
    assert services["pgadmin"]["image"].startswith("dpage/pgadmin4")
    assert services["mage"]["build"]["dockerfile"] == "Dockerfile.mage"
    assert (ROOT / services["mage"]["build"]["dockerfile"]).is_file()


def test_mage_waits_for_healthy_postgres(compose: dict) -> None:
    mage = compose["services"]["mage"]
    assert mage["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(compose["services"]["postgres"]["healthcheck"]["test"])


def test_every_named_volume_is_declared(compose: dict) -> None:
    used = set()
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                used.add(source)
    assert used == set(compose["volumes"])


def test_bind_mounts_exist(compose: dict) -> None:
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), volume


def test_mage_keeps_state_on_volumes(compose: dict) -> None:
    targets = {volume.split(":", 1)[1] for volume in compose["services"]["mage"]["volumes"]}
    dockerfile = DOCKERFILE.read_text()
    assert "/app/mage_data" in targets
    assert "MAGE_DATA_DIR=/app/mage_data" in dockerfile
    assert "/app/meltano_state" in targets
    assert "MELTANO_DATABASE_URI=sqlite:////app/meltano_state/meltano.db" in dockerfile
    assert "/app/.secrets" in targets
    assert "/app/orchestration/mage" in targets


def test_compose_variables_are_in_env_example(compose: dict) -> None:
    text = COMPOSE.read_text()
    required = set(re.findall(r"\$\{([A-Z_]+)(?::\?[^}]*)?\}", text))
    with_default = set(re.findall(r"\$\{([A-Z_]+):-[^}]*\}", text))
    example = env_example()
    assert required - with_default <= set(example)
    assert with_default <= set(example)


def test_env_example_holds_placeholders_only() -> None:
    for name, value in env_example().items():
        if "PASSWORD" in name or name == "QBO_REALM_ID":
            assert value.startswith("replace-with-"), name
    for secret_name in ("qb_client_id", "qb_secret_id", "qb_refresh_token", "pg_password"):
        assert f"{secret_name}=" not in ENV_EXAMPLE.read_text()


def test_dockerfile_builds_two_environments() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0][0] == "FROM"
    assert instructions[0][1].startswith("python:3.11")

    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "uv venv --python /usr/local/bin/python3.11 /opt/mage-venv" in runs
    assert "uv pip sync --python /opt/mage-venv/bin/python" in runs
    assert "orchestration/requirements-mage.txt" in runs
    assert "uv venv --python /usr/local/bin/python3.11 /app/.venv" in runs
    assert "/app/.venv/bin/meltano install" in runs

    (cmd,) = [rest for keyword, rest in instructions if keyword == "CMD"]
    assert cmd == '["mage", "start", "/app/orchestration/mage"]'


def test_dockerfile_copies_existing_unignored_sources() -> None:
    ignored = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = [rest for keyword, rest in dockerfile_instructions() if keyword == "COPY"]
    assert copies
    for copy in copies:
        *sources, _target = shlex.split(copy)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY source {source} is missing"
            assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source


def test_mage_command_points_at_the_project(compose: dict) -> None:
    command = compose["services"]["mage"]["command"]
    assert command[:2] == ["mage", "start"]
    assert Path(command[2]).relative_to("/app") == Path("orchestration/mage")
    assert (ROOT / "orchestration" / "mage" / "metadata.yaml").is_file()


def test_lock_pins_mage_ai() -> None:
    lock = (ROOT / "orchestration" / "requirements-mage.txt").read_text()
    assert re.search(r"^mage-ai==0\.9\.80$", lock, re.MULTILINE)
    pinned = [line for line in lock.splitlines() if line and not line.startswith((" ", "#"))]
    assert all("==" in line for line in pinned)
