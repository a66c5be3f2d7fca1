"""The example Prometheus rules, scrape config and Grafana dashboard under deploy/: valid YAML and JSON, every
expression valid PromQL, the rules' behaviour checked by `promtool test rules` where promtool is installed, and
every metric they name exported by a real service: a pipeline that ran a report against a lab TLS server,
scraped over HTTP at /metrics and /probe."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer
from tlsfleet.coordinator.service.config import load_config
from tlsfleet.coordinator.service.history import open_history
from tlsfleet.coordinator.service.pipeline import Pipeline

yaml = pytest.importorskip("yaml", reason="PyYAML comes with kubernetes-validate (dev extras)")
promql_parser = pytest.importorskip("promql_parser", reason="promql-parser is in the dev extras")

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "tlsfleet-rules.yml"
SCRAPE_CONFIG = PROMETHEUS / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "tlsfleet-dashboard.json"
RULES_TEST = Path(__file__).parent / "prometheus" / "tlsfleet-rules.test.yml"
# Metric names: ours, and the process and platform collectors' the dashboard reads.
METRIC_NAME = re.compile(r"\b(?:tlsfleet|process|python)_[a-z0-9_]+\b")
# Grafana's variables, as it would substitute them before sending a query.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$report": ".*", "$job": ".*"}
ALERTS = {
    "TLSProbeFailing",
    "TLSCertificateExpiringSoon",
    "TLSCertificateExpiringCritical",
    "TLSFleetAgentDown",
    "TLSFleetReportRunStale",
    "TLSFleetReportRunAbandoned",
    "TLSFleetCriticalFindings",
}


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in board["panels"] for t in p["targets"]]
    queries += [v["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    return queries


def grafana_expanded(query: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    assert "$" not in query, f"a Grafana variable this test does not know: {query}"
    return query


def promql(query: str) -> str:
    """The query itself: label_values(METRIC, LABEL), a Grafana template query, selects METRIC."""
    match = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query)
    return match.group(1) if match else query


def test_the_rules_and_the_scrape_config_are_valid_yaml_with_the_alerts_asked_for() -> None:
    found = {rule["alert"] for rule in rules()}
    assert found >= ALERTS
    for rule in rules():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    assert config["rule_files"] == [RULES.name]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    probe = jobs["tlsfleet-probe"]
    assert probe["metrics_path"] == "/probe"
    relabelled = {r["target_label"] for r in probe["relabel_configs"]}
    assert relabelled == {"__param_target", "instance", "__address__"}
    assert jobs["tlsfleet"].get("metrics_path", "/metrics") == "/metrics"


def test_every_expression_is_valid_promql() -> None:
    for rule in rules():
        promql_parser.parse(rule["expr"])
    queries = dashboard_queries()
    assert queries
    for query in queries:
        promql_parser.parse(promql(grafana_expanded(query)))
    with pytest.raises(ValueError):
        promql_parser.parse("sum(tlsfleet_probe_success")  # the parser does refuse what is not PromQL


def test_the_dashboard_is_grafana_json_with_a_datasource_variable() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 30
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus); the parser checks still ran")
    return found


def test_promtool_accepts_the_rules_and_the_config_and_their_unit_tests_pass() -> None:
    promtool = _promtool()
    for command in (
        [promtool, "check", "rules", str(RULES)],
        [promtool, "check", "config", str(SCRAPE_CONFIG)],
        [promtool, "test", "rules", RULES_TEST.name],
    ):
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=RULES_TEST.parent)
        assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
        assert "SUCCESS" in done.stdout + done.stderr


async def _get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        async with asyncio.timeout(30):
            raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    """The metric names a real pipeline exports after two report runs against a lab server (the second with a
    rotated certificate, so there are changes), at /metrics and at /probe."""
    workdir = tmp_path_factory.mktemp("exported")
    pki = LabPKI("Exported Metrics")
    bundle = write_pem(workdir / "root.pem", pki.root_pem())
    leaf = pki.issue_leaf("localhost", not_after=datetime.now(UTC) + timedelta(days=5))
    (workdir / "inventory.toml").write_text("")
    with TlsServer(ServedIdentity.of(leaf, pki.intermediate), host="127.0.0.1") as server:
        (workdir / "coordinator.toml").write_text(
            '[coordinator]\ninventory = "inventory.toml"\nreports_dir = "reports"\nmetrics_listen = "127.0.0.1:0"\n'
            '[storage]\npath = "history.sqlite"\n[probe_endpoint]\n'
            f'[[report]]\nname = "edge"\ntargets = ["localhost:{server.port}"]\ninterval = "1h"\n'
            'include_local = true\nprobe_timeout = "5s"\nformats = ["json"]\n'
        )
        config = load_config(workdir / "coordinator.toml")

        async def scrape() -> tuple[str, str]:
            history = open_history(config.storage)
            pipeline = Pipeline(config, history)
            try:
                await pipeline.start_metrics()
                assert pipeline.metrics_address is not None
                port = int(pipeline.metrics_address.rpartition(":")[2])
                for _ in range(2):
                    await pipeline.run(config.reports[0])
                status, metrics = await _get(port, "/metrics")
                assert status == 200, metrics
                status, probed = await _get(port, f"/probe?target=localhost:{server.port}&agents=local")
                assert status == 200, probed
                return metrics, probed
            finally:
                await pipeline.close()
                history.close()

        with pytest.MonkeyPatch.context() as env:
            env.setenv("SSL_CERT_FILE", str(bundle))  # the local vantage trusts the lab CA
            metrics, probed = asyncio.run(scrape())
    names: set[str] = set()
    for text in (metrics, probed):
        for family in text_string_to_metric_families(text):
            names.add(family.name)
            names.update(sample.name for sample in family.samples)
            if family.type == "counter":
                names.add(family.name + "_total")
    yield names


@pytest.mark.e2e  # a whole report pipeline
def test_every_metric_the_rules_and_the_dashboard_name_is_exported(exported: set[str]) -> None:
    used = {name for rule in rules() for name in METRIC_NAME.findall(rule["expr"])}
    used |= {name for query in dashboard_queries() for name in METRIC_NAME.findall(query)}
    assert "tlsfleet_probe_success" in used and "tlsfleet_build_info" in used
    missing = sorted(used - exported)
    assert not missing, f"named by deploy/ but not exported: {missing}"
