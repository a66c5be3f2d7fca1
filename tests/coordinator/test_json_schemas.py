"""Every JSON document tlsfleet prints, writes or sends carries `schema` and `kind`, and matches the JSON
Schema of its kind in coordinator/schemas/: checked against real output of the real CLI."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urljoin

import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

from tlsfleet.agent.documents import KINDS, document
from tlsfleet.coordinator.diagnosis.model import Severity
from tlsfleet.coordinator.lab.agent_process import tlsfleet_command, trust_env
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer
from tlsfleet.coordinator.service.alerts import Alert, AlertKind
from tlsfleet.coordinator.service.webhooks import alert_json

SCHEMAS = Path(__file__).resolve().parents[2] / "coordinator" / "schemas"


def _registry() -> Registry:
    resources = []
    for path in SCHEMAS.glob("*.schema.json"):
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


REGISTRY = _registry()


def validate(data: object) -> str:
    assert isinstance(data, dict), data
    kind = str(data.get("kind", "")).removeprefix("tlsfleet-")
    schema = json.loads((SCHEMAS / f"{kind}.schema.json").read_text())
    Draft202012Validator(schema, registry=REGISTRY).validate(data)
    assert not undescribed(data, schema), f"{kind}: keys its schema does not describe: {undescribed(data, schema)}"
    return kind


def undescribed(instance: object, node: dict, base: str = "", path: str = "$") -> list[str]:
    """Where `instance` has a key that the schema `node` (an object schema listing its properties) does not
    describe: the schemas allow additions for newer versions, so validation alone lets them fall behind."""
    while "$ref" in node:
        uri = urljoin(base, node["$ref"])
        base = uri.partition("#")[0]
        node = REGISTRY.resolver().lookup(uri).contents
    base = node.get("$id", base)
    found: list[str] = []
    if isinstance(instance, dict) and "properties" in node:
        for key, value in instance.items():
            if key in node["properties"]:
                found += undescribed(value, node["properties"][key], base, f"{path}.{key}")
            else:
                found.append(f"{path}.{key}")
    elif isinstance(instance, dict) and isinstance(node.get("additionalProperties"), dict):
        for key, value in instance.items():
            found += undescribed(value, node["additionalProperties"], base, f"{path}.{key}")
    elif isinstance(instance, list) and isinstance(node.get("items"), dict):
        for value in instance:
            found += undescribed(value, node["items"], base, f"{path}[]")
    return sorted(set(found))


def test_every_kind_has_a_valid_schema_and_every_schema_a_kind() -> None:
    files = {p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("*.schema.json")} - {"common"}
    assert files == set(KINDS)
    for path in SCHEMAS.glob("*.schema.json"):
        Draft202012Validator.check_schema(json.loads(path.read_text()))


def test_a_key_the_schema_does_not_describe_is_caught() -> None:
    runs = document("runs", {"runs": [{"run_id": 1, "report": "edge", "started_at": "2026-12-01T00:00:00Z"}]})
    runs["runs"][0]["elapsed"] = 3
    schema = json.loads((SCHEMAS / "runs.schema.json").read_text())
    assert undescribed(runs, schema, schema["$id"]) == ["$.runs[].elapsed"]


def test_a_document_that_breaks_its_schema_is_caught() -> None:
    with pytest.raises(ValidationError, match="'exit_code' is a required property"):
        validate(document("error", {"error": "x"}))
    with pytest.raises(ValidationError):
        validate({**document("error", {"error": "x", "exit_code": 2}), "schema": 2})


def test_webhook_alert_bodies() -> None:
    alert = Alert(
        key="k1",
        kind=AlertKind.FINDING,
        severity=Severity.CRITICAL,
        title="incomplete chain",
        text="the server sends no intermediate",
        report="edge",
        target="api.example.test:443",
        agents=("edge-1",),
        cause="incomplete_chain",
        observed_at=datetime(2026, 12, 1, tzinfo=UTC),
    )
    assert validate(alert_json(alert)) == "alert"


@pytest.mark.e2e
def test_real_cli_output_matches_the_schemas(tmp_path: Path) -> None:
    lab = LabPKI("Schemas")
    write_pem(tmp_path / "root.pem", lab.root.cert_pem)
    env = trust_env(tmp_path, tmp_path / "root.pem")
    env["TLSFLEET_PKI_DIR"] = str(tmp_path / "pki")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*tlsfleet_command(), *args], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
        )

    assert cli("pki", "init").returncode == 0 and cli("pki", "issue", "agent", "web-1").returncode == 0
    kinds = [validate(json.loads(cli("pki", "show", "--json").stdout))]
    with TlsServer(ServedIdentity.of(lab.issue_leaf("localhost"), lab.intermediate)) as server:
        target = f"localhost:{server.port}"
        probe = cli("probe", target, "--json", "--save", "seen.json")
        config = tmp_path / "coordinator.toml"
        config.write_text(
            f'[storage]\npath = "h.sqlite"\n[[report]]\nname = "edge"\ntargets = ["{target}"]\ninterval = "1h"\n'
            'include_local = true\nformats = ["json"]\n'
        )
        assert cli("report", "run", "edge", "--config", str(config)).returncode in (0, 1)
    kinds.append(validate(json.loads(probe.stdout)))
    kinds.append(validate(json.loads((tmp_path / "seen.json").read_text())))
    kinds.append(validate(json.loads(cli("diagnose", "seen.json", "--json").stdout)))
    kinds.append(validate(json.loads(cli("agents", "--json").stdout)))
    kinds.append(validate(json.loads(cli("report", "list", "--config", str(config), "--json").stdout)))
    shown = cli("report", "show", "latest", "--config", str(config), "--format", "json")
    kinds.append(validate(json.loads(shown.stdout)))
    [written] = (tmp_path / "reports" / "edge").glob("1-*.json")
    kinds.append(validate(json.loads(written.read_text())))
    bad = cli("probe", "not a target", "--json")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")
    kinds.append(validate(json.loads(bad.stdout)))
    assert kinds == ["pki", "probe", "recording", "probe", "agents", "runs", "report", "report", "error"]
