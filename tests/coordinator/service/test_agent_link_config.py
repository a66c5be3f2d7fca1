"""The [agent_link] table of coordinator.toml: read back with its defaults, every mistake named."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tlsfleet.coordinator.service.config import AgentLinkConfig, ConfigError, parse_config

REPORT = '\n[[report]]\nname = "r"\ntargets = ["a.test"]\ninterval = "1m"\n'


def parse(text: str) -> AgentLinkConfig | None:
    return parse_config(tomllib.loads(text + REPORT), Path("/etc/tlsfleet/coordinator.toml")).agent_link


def test_no_table_no_listener() -> None:
    assert parse("") is None


def test_a_full_table_reads_back() -> None:
    link = parse(
        '[agent_link]\nlisten = "0.0.0.0:7443"\nallow = ["edge-*", "k8s-*"]\nmin_agent_version = "0.1.0"\n'
        'heartbeat_interval = "2s"\nstale_after = 4\nquery_allow = ["coordinator", "oncall"]\nmax_agents = 500\n'
    )
    assert link == AgentLinkConfig(
        listen="0.0.0.0:7443",
        allow=("edge-*", "k8s-*"),
        min_agent_version="0.1.0",
        heartbeat_interval_s=2.0,
        stale_after=4,
        query_allow=("coordinator", "oncall"),
        max_agents=500,
    )


def test_defaults() -> None:
    assert parse('[agent_link]\nlisten = "127.0.0.1:0"\n') == AgentLinkConfig(listen="127.0.0.1:0")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('listen = "7443"', "listen: endpoint '7443' has no port"),
        ('listen = "0.0.0.0:7443"\nallow = "edge-*"', "allow must be a list"),
        ('listen = "0.0.0.0:7443"\nmin_agent_version = "latest"', "min_agent_version 'latest' is not accepted"),
        ('listen = "0.0.0.0:7443"\nheartbeat_interval = "0s"', "heartbeat_interval must be 0.1-300 s"),
        ('listen = "0.0.0.0:7443"\nstale_after = 0', "stale_after must be a whole number from 1 to 100"),
        ('listen = "0.0.0.0:7443"\nquery_allow = ["Not A Name"]', "query_allow: invalid name 'Not A Name'"),
        ('listen = "0.0.0.0:7443"\nlisten_on = "x"', "unknown key(s) ['listen_on']"),
        ("allow = []", "'listen' must be a non-empty string"),
    ],
)
def test_mistakes_are_named(table: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(f"[agent_link]\n{table}\n")
    assert "[agent_link]" in str(caught.value)
    assert message in str(caught.value)
