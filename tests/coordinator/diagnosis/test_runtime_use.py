"""Healthy is quiet: a runtime store that lacks a private root warns only where that runtime is in use,
once per host and root, whatever the number of stores; elsewhere it is an info note.

Store verdicts are OpenSSL's own (tests/judged.py); found_by is worded as the agent words it
(agent/trust/stores.py and runtimes.py).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.judged import NAME, SYSTEM_BUNDLE, der, judged, store
from tests.outcomes import observe
from tlsfleet.agent.model import TrustStore, Verdict
from tlsfleet.coordinator.diagnosis.engine import diagnose
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.diagnosis.store_use import store_use
from tlsfleet.coordinator.diagnosis.trust import findings, runtime_label
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.observation import DiagnosisSettings, Observation
from tlsfleet.coordinator.outcomes import ProbeOutcome

# found_by as the agent words it.
SEARCHED_PYTHON = "certifi of /usr/bin/python3 (system interpreter in /usr/bin)"
NAMED_PYTHON = "certifi of /srv/app/venv/bin/python3 (--runtime python=/srv/app/venv)"
JAVA_ON_PATH = "/usr/bin/java (`java` on PATH)"
NAMED_JAVA = "/opt/jdk-21 (--runtime java=/opt/jdk-21)"
JAVA_HOME = "JAVA_HOME in the agent's environment: /opt/jdk-17"
NODE_VAR = "NODE_EXTRA_CA_CERTS in the agent's environment; node /usr/bin/node (`node` on PATH)"
REQUESTS_VAR = "REQUESTS_CA_BUNDLE in the agent's environment (Python requests reads it instead of certifi)"


class Fleet:
    """A private CA whose root the hosts' OpenSSL store holds, and public roots that runtime stores hold."""

    def __init__(self) -> None:
        self.private = LabPKI("Acme Internal")
        self.public = LabPKI("Public Web")  # stands in for Mozilla's roots
        self.chain = (der(self.private.issue_leaf(NAME).cert), self.private.intermediate.der)
        self.trusted = [self.public.root.cert, self.private.root.cert]
        self.mozilla = [self.public.root.cert]

    def system(self) -> list:
        return [store("system", self.trusted, found_by="OpenSSL's compiled-in default bundle")]

    def host(self, agent: str, *runtime_stores: tuple[str, str, str], ip: str = "10.0.0.1") -> ProbeOutcome:
        """A host whose system store trusts the private root; each (name, runtime, found_by) store lacks it."""
        kinds = {"java": "java-keystore"}
        stores = self.system() + [
            store(
                name,
                self.mozilla,
                runtime=runtime,
                found_by=why,
                kind=kinds.get(runtime, "file"),
                path=f"/opt/{agent}/{name.replace(':', '_').replace('/', '_')}",
            )
            for name, runtime, why in runtime_stores
        ]
        return judged(agent, self.chain, stores, ip=ip)


@pytest.fixture
def fleet() -> Fleet:
    return Fleet()


def _run(obs: Observation) -> list[Finding]:
    return list(findings(obs, DiagnosisSettings.for_request(obs.request)))


def _loud(obs: Observation) -> list[Finding]:
    return [f for f in diagnose(obs) if f.severity >= Severity.WARNING]


def _evidence(finding: Finding, name: str) -> dict[str, str]:
    return dict(next(e for e in finding.evidence if e.field == name).values)


def test_runtimes_found_but_not_in_use_are_one_info_note_per_host(fleet: Fleet) -> None:
    """The usual private-CA host: a JRE on PATH and a system Python's certifi, neither declared."""
    obs = observe(
        fleet.host("web-1", ("certifi", "python", SEARCHED_PYTHON), ("java", "java", JAVA_ON_PATH)),
        fleet.host("web-2", ("certifi", "python", SEARCHED_PYTHON), ("java", "java", JAVA_ON_PATH)),
    )
    assert _loud(obs) == [], "healthy is quiet"
    [finding] = _run(obs)
    assert finding.cause is Cause.RUNTIME_STORE_DIFFERS and finding.severity is Severity.INFO
    assert finding.agents == ("web-1", "web-2")
    assert finding.summary.startswith(
        "On web-1 and web-2, Python requests (certifi) and Java (the system cacerts) would reject"
    )
    assert "no client is known to fail" in finding.summary
    assert "'CN=Acme Internal Root CA'" in finding.summary
    why = _evidence(finding, "not declared in use")
    assert "system interpreter in /usr/bin" in why["web-1"] and "`java` on PATH" in why["web-1"]
    assert "--runtime" in finding.fix


def test_declared_runtimes_are_one_warning_naming_each_with_its_fix_once(fleet: Fleet) -> None:
    host = fleet.host(
        "app-1",
        ("certifi", "python", NAMED_PYTHON),
        ("java_home", "java", JAVA_HOME),
        ("node_extra_ca_certs", "node", NODE_VAR),
    )
    [finding] = _run(observe(host))
    assert finding.severity is Severity.WARNING
    assert finding.agents == ("app-1",)
    assert finding.summary.startswith(
        "On app-1, Python requests (certifi), Java under JAVA_HOME (its cacerts) and Node.js (NODE_EXTRA_CA_CERTS) "
        "reject api.example.test:443: their stores ("
    )
    assert "/opt/app-1/certifi" in finding.summary and "/opt/app-1/java_home" in finding.summary
    fix = finding.fix
    assert fix.count(f"REQUESTS_CA_BUNDLE={SYSTEM_BUNDLE}") == 1
    assert fix.count("keytool -importcert") == 1 and "-keystore /opt/app-1/java_home" in fix
    assert fix.count("NODE_EXTRA_CA_CERTS") == 1 and "--use-openssl-ca" in fix
    assert fix.index("Python") < fix.index("Java") < fix.index("Node.js")
    used = _evidence(finding, "in use")["app-1"]
    assert "--runtime python=/srv/app/venv" in used
    assert "JAVA_HOME set in the agent's environment" in used
    assert "NODE_EXTRA_CA_CERTS set in the agent's environment" in used
    assert any(cmd.startswith("keytool -list") and "/opt/app-1/java_home" in cmd for cmd in finding.reproduce)


def test_in_use_and_idle_gaps_on_one_host_are_a_warning_and_an_info(fleet: Fleet) -> None:
    host = fleet.host("app-1", ("certifi", "python", NAMED_PYTHON), ("java", "java", JAVA_ON_PATH))
    found = sorted(_run(observe(host)), key=lambda f: -f.severity)
    assert [(f.severity, f.summary.split(" reject")[0].split(" would")[0]) for f in found] == [
        (Severity.WARNING, "On app-1, Python requests (certifi)"),
        (Severity.INFO, "On app-1, Java (the system cacerts)"),
    ]


def test_second_stores_of_a_kind_get_their_runtime_wording_and_fix(fleet: Fleet) -> None:
    host = fleet.host(
        "app-1",
        ("certifi", "python", NAMED_PYTHON),
        (
            "certifi:/usr/lib/python3/dist-packages",
            "python",
            "certifi of /usr/bin/python3 (--runtime python=/usr/bin/python3)",
        ),
        ("java", "java", "/usr/lib/jvm/java-17 (--runtime java=/usr/lib/jvm/java-17)"),
        ("java:/opt/jdk-21", "java", NAMED_JAVA),
    )
    [finding] = _run(observe(host))
    assert "Python requests (the certifi in /usr/lib/python3/dist-packages)" in finding.summary
    assert "Java under /opt/jdk-21 (its cacerts)" in finding.summary
    # One sentence per runtime, every keystore in the Java one.
    assert finding.fix.count("Python: point it at the system bundle") == 1
    assert finding.fix.count("Java: import the root into") == 1
    assert "-keystore /opt/app-1/java " in finding.fix and "-keystore /opt/app-1/java__opt_jdk-21" in finding.fix
    assert runtime_label("certifi:/x") == "Python requests (the certifi in /x)"
    assert runtime_label("java:/opt/jdk") == "Java under /opt/jdk (its cacerts)"
    assert runtime_label("extra:payments") == "clients configured with the bundle 'payments'"


def test_stores_judged_once_for_several_names_count_for_each(fleet: Fleet) -> None:
    """Identical stores come as one verdict with same_as; the rule sees one verdict per store name."""
    host = fleet.host(
        "app-1",
        ("certifi", "python", NAMED_PYTHON),
        ("certifi:/other", "python", "certifi of /x (--runtime python=/x)"),
    )
    assert host.result is not None
    grouped = host.result.addresses[0].stores
    assert any(s.same_as == ("certifi:/other",) for s in grouped), grouped
    [finding] = _run(observe(host))
    assert "the certifi in /other" in finding.summary and finding.severity is Severity.WARNING


def test_several_addresses_of_one_host_are_one_finding(fleet: Fleet) -> None:
    a = fleet.host("app-1", ("java_home", "java", JAVA_HOME), ip="10.0.0.1")
    b = fleet.host("app-1", ("java_home", "java", JAVA_HOME), ip="10.0.0.2")
    assert a.result is not None and b.result is not None
    both = replace(a, result=replace(a.result, addresses=a.result.addresses + b.result.addresses))
    [finding] = _run(observe(both))
    assert finding.addresses == ("10.0.0.1", "10.0.0.2") and finding.agents == ("app-1",)


def test_hosts_with_different_gaps_get_their_own_findings(fleet: Fleet) -> None:
    obs = observe(
        fleet.host("app-1", ("java_home", "java", JAVA_HOME)),
        fleet.host("app-2", ("java_home", "java", JAVA_HOME), ("certifi", "python", NAMED_PYTHON)),
    )
    found = _run(obs)
    assert sorted(f.agents for f in found) == [("app-1",), ("app-2",)]
    assert all(f.severity is Severity.WARNING for f in found)


def test_requests_ca_bundle_in_the_environment_is_in_use(fleet: Fleet) -> None:
    host = fleet.host("app-1", ("requests_ca_bundle", "python", REQUESTS_VAR))
    [finding] = _run(observe(host))
    assert finding.severity is Severity.WARNING
    assert "Python requests (REQUESTS_CA_BUNDLE)" in finding.summary
    assert "REQUESTS_CA_BUNDLE names /opt/app-1/requests_ca_bundle" in finding.fix


def test_a_private_root_the_whole_fleet_trusts_everywhere_is_silent(fleet: Fleet) -> None:
    stores = [*fleet.system(), store("certifi", fleet.trusted, runtime="python", found_by=NAMED_PYTHON)]
    assert diagnose(observe(judged("a", fleet.chain, stores), judged("b", fleet.chain, stores))) == ()


@pytest.mark.parametrize(
    ("name", "runtime", "found_by", "declared"),
    [
        ("certifi", "python", SEARCHED_PYTHON, ""),
        ("certifi", "python", NAMED_PYTHON, "--runtime python=/srv/app/venv"),
        (
            "certifi",
            "python",
            f"{SEARCHED_PYTHON}; also --runtime python=/usr/bin/python3",
            "--runtime python=/usr/bin/python3",
        ),
        ("java", "java", JAVA_ON_PATH, ""),
        ("java:/opt/jdk-21", "java", NAMED_JAVA, "--runtime java=/opt/jdk-21"),
        ("java_home", "java", JAVA_HOME, "JAVA_HOME set in the agent's environment"),
        ("requests_ca_bundle", "python", REQUESTS_VAR, "REQUESTS_CA_BUNDLE set in the agent's environment"),
        (
            "curl_ca_bundle",
            "",
            "CURL_CA_BUNDLE in the agent's environment",
            "CURL_CA_BUNDLE set in the agent's environment",
        ),
        ("node_extra_ca_certs", "node", NODE_VAR, "NODE_EXTRA_CA_CERTS set in the agent's environment"),
        (
            "extra:payments",
            "",
            "--extra-store payments=/etc/payments/ca.pem",
            "--extra-store payments=/etc/payments/ca.pem",
        ),
        ("ssl_cert_file", "", "SSL_CERT_FILE in the agent's environment", ""),  # the system's own: not a runtime
    ],
)
def test_what_declares_a_store_in_use(name: str, runtime: str, found_by: str, declared: str) -> None:
    info = TrustStore(name, "file", "/p", 1, "ab" * 32, runtime=runtime, found_by=found_by)
    assert store_use(name, info).declared == declared


def test_stores_named_after_a_variable_are_in_use_without_found_by() -> None:
    """Recordings from agents that reported no found_by: the name alone says a variable is set."""
    assert store_use("node_extra_ca_certs", None).in_use
    assert store_use("java_home", None).in_use
    assert not store_use("certifi", None).in_use and not store_use("java", None).in_use


def _declare(outcome: ProbeOutcome, name: str) -> ProbeOutcome:
    """The outcome as an agent that flags its declared stores reports it: `name` declared."""
    assert outcome.result is not None
    stores = tuple(replace(t, declared=True) if t.name == name else t for t in outcome.result.trust_stores)
    return replace(outcome, result=replace(outcome.result, trust_stores=stores))


# A wording no agent uses: only the flag can say this store is in use.
NAMED_ELSEWHERE = "certifi of /srv/app/venv/bin/python3 (named in the agent's configuration)"


def test_the_agents_declared_flag_decides_whatever_found_by_says(fleet: Fleet) -> None:
    flagged = _declare(fleet.host("app-1", ("certifi", "python", NAMED_ELSEWHERE)), "certifi")
    [warning] = _run(observe(flagged))
    assert warning.severity is Severity.WARNING and warning.agents == ("app-1",)
    assert _evidence(warning, "in use")["app-1"] == f"certifi: {NAMED_ELSEWHERE}"
    [note] = _run(observe(fleet.host("app-1", ("certifi", "python", NAMED_ELSEWHERE))))
    assert note.severity is Severity.INFO, "unflagged and not worded as declared: found only"


@pytest.mark.parametrize(
    ("found_by", "declared"),
    [
        (NAMED_PYTHON, "--runtime python=/srv/app/venv"),
        (REQUESTS_VAR, "REQUESTS_CA_BUNDLE set in the agent's environment"),
        ("", "declared in use by the agent"),
    ],
)
def test_a_declared_store_says_what_declares_it(found_by: str, declared: str) -> None:
    info = TrustStore("certifi", "file", "/p", 1, "ab" * 32, runtime="python", found_by=found_by, declared=True)
    assert store_use("certifi", info).declared == declared


def test_a_system_store_is_never_a_runtime_in_use_even_when_declared() -> None:
    info = TrustStore("ssl_cert_file", "file", "/p", 1, "ab" * 32, found_by="SSL_CERT_FILE in the agent's environment")
    assert not store_use("ssl_cert_file", replace(info, declared=True)).in_use


@pytest.mark.parametrize(
    ("system_path", "file", "source"),
    [
        (
            SYSTEM_BUNDLE,
            "acme-internal-root-ca.pem",
            f"(acme-internal-root-ca.pem: the root 'Acme Internal Root CA' saved as PEM from the system store "
            f"{SYSTEM_BUNDLE})",
        ),
        # The system store bears the root's own file name: it is the file, not something to export it from.
        (
            "/srv/ca/acme-internal-root-ca.pem",
            "/srv/ca/acme-internal-root-ca.pem",
            "(/srv/ca/acme-internal-root-ca.pem holds the root 'Acme Internal Root CA'; if it holds other "
            "certificates too, save 'Acme Internal Root CA' alone as PEM and import that file)",
        ),
    ],
)
def test_the_java_fix_names_the_root_file_naturally(fleet: Fleet, system_path: str, file: str, source: str) -> None:
    system = store("system", fleet.trusted, path=system_path, found_by="SSL_CERT_FILE in the agent's environment")
    java = store("java_home", fleet.mozilla, runtime="java", found_by=JAVA_HOME, kind="java-keystore", path="/j/c")
    [finding] = _run(observe(judged("app-1", fleet.chain, [system, java])))
    assert f"-file {file} -keystore /j/c" in finding.fix
    assert source in finding.fix
    assert " from root.pem" not in finding.fix and f"from {file}" not in finding.fix


def test_a_runtime_store_that_fails_for_time_only_is_not_a_gap(fleet: Fleet) -> None:
    host = fleet.host("app-1", ("java_home", "java", JAVA_HOME))
    assert host.result is not None
    address = host.result.addresses[0]
    expired = Verdict.EXPIRED
    stores = tuple(
        s if s.store == "system" else replace(s, at_agent_time=expired, at_reference_time=expired, verify_code=10)
        for s in address.stores
    )
    changed = replace(host, result=replace(host.result, addresses=(replace(address, stores=stores),)))
    assert _run(observe(changed)) == []


NODE_ASKED = "node v20.20.2 at /usr/bin/node (--runtime node=/usr/bin/node): bundled roots (144)"


def _node_host(fleet: Fleet, *, extra: bool) -> ProbeOutcome:
    """A host whose node was asked for its roots (the `node` store), with or without NODE_EXTRA_CA_CERTS set."""
    node = store("node", fleet.mozilla, runtime="node", found_by=NODE_ASKED, kind="node", path="/usr/bin/node")
    stores = [*fleet.system(), node]
    if extra:
        stores.append(
            store("node_extra_ca_certs", fleet.mozilla, runtime="node", found_by=NODE_VAR, path="/etc/app.pem")
        )
    return judged("app-1", fleet.chain, stores)


def test_a_node_asked_for_its_roots_speaks_for_node_once(fleet: Fleet) -> None:
    [finding] = _run(observe(_node_host(fleet, extra=True)))
    assert finding.severity is Severity.WARNING
    assert finding.summary.startswith(
        "On app-1, Node.js (its bundled roots) rejects api.example.test:443: its store /usr/bin/node (its bundled "
        "roots) lacks the root"
    ), "one Node label: the NODE_EXTRA_CA_CERTS file is part of what node trusts, not a client of its own"
    assert "add 'CN=Acme Internal Root CA' to /etc/app.pem (NODE_EXTRA_CA_CERTS)" in finding.fix
    assert "--use-openssl-ca" in finding.fix
    [check] = [c for c in finding.reproduce if c.startswith("/usr/bin/node -e ")]
    assert '"host": "10.0.0.1"' in check and '"servername": "api.example.test"' in check
    assert not any("-CAfile /usr/bin/node" in c for c in finding.reproduce), "node is not a PEM file"


def test_without_the_variable_the_node_fix_says_to_set_it(fleet: Fleet) -> None:
    [finding] = _run(observe(_node_host(fleet, extra=False)))
    assert "name that file in NODE_EXTRA_CA_CERTS in the service's environment" in finding.fix
    assert runtime_label("node:/opt/node/bin/node") == "Node.js at /opt/node/bin/node (its bundled roots)"
