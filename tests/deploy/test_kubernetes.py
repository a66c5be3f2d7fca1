"""The Kubernetes base: every manifest kustomization.yaml lists is valid against the Kubernetes schemas
(offline), hardened, wired to the others by name, and carries a configuration and command lines that
tlsfleet's own loaders and command definitions accept."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tlsfleet.agent.cli import app as agent_app
from tlsfleet.coordinator.cli.app import app as tlsfleet_app
from tlsfleet.coordinator.fleet.inventory import load_inventory
from tlsfleet.coordinator.service.config import load_config

from . import sandbox
from .cli_parse import parse_command_line

yaml = pytest.importorskip("yaml", reason="PyYAML comes with kubernetes-validate (dev extras)")
kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the dev extras")

BASE = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"  # the oldest version the base is meant for


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((BASE / "kustomization.yaml").read_text())


def rendered() -> list[dict[str, Any]]:
    """The base as kustomize renders it. The base is plain resources, so loading each listed file and
    applying the namespace, labels and image tag it sets is the whole rendering (no kustomize needed)."""
    k = kustomization()
    assert set(k) <= {"apiVersion", "kind", "namespace", "labels", "resources", "images"}, "rendering covers these"
    tags = {i["name"]: i["newTag"] for i in k.get("images", [])}
    documents = []
    for resource in k["resources"]:
        for doc in yaml.safe_load_all((BASE / resource).read_text()):
            if doc is None:
                continue
            if doc["kind"] != "Namespace":
                doc["metadata"]["namespace"] = k["namespace"]
            for entry in k.get("labels", []):
                doc["metadata"].setdefault("labels", {}).update(entry["pairs"])
            for container in _containers(doc):
                if container["image"] in tags:
                    container["image"] = f"{container['image']}:{tags[container['image']]}"
            documents.append(doc)
    return documents


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    (doc,) = [d for d in rendered() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return doc


def test_every_listed_resource_exists_and_nothing_is_left_out() -> None:
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


def test_every_manifest_is_valid_against_the_kubernetes_schemas_offline() -> None:
    # kubernetes-validate ships its schemas: nothing is fetched.
    for doc in rendered():
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_an_invalid_manifest_is_refused() -> None:
    # The check above is a real one: a misspelt field fails it.
    deployment = one("Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_kubectl_kustomize_renders_what_the_test_renders() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the base was rendered by loading its listed resources")
    done = subprocess.run([kubectl, "kustomize", str(BASE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    theirs = [d for d in yaml.safe_load_all(done.stdout) if d]
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(theirs, key=key) == sorted(rendered(), key=key)


@pytest.mark.parametrize("kind", ["Deployment", "DaemonSet"])
def test_workloads_are_hardened_and_bounded(kind: str) -> None:
    spec = one(kind)["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] >= 1000
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in spec["containers"]:
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])
        # With a read-only root, every writable path is a volume.
        mounted = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert "/tmp" in mounted
        writable = {path for path, m in mounted.items() if not m.get("readOnly")}
        assert writable <= {"/tmp", "/var/lib/tlsfleet"}


def test_the_agents_mount_the_nodes_trust_stores_read_only() -> None:
    spec = one("DaemonSet")["spec"]["template"]["spec"]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert sorted(host_paths.values()) == ["/etc/pki", "/etc/ssl/certs", "/usr/share/ca-certificates"]
    (container,) = spec["containers"]
    for mount in container["volumeMounts"]:
        if mount["name"] in host_paths:
            assert mount["readOnly"] is True
            assert mount["mountPath"] == host_paths[mount["name"]]  # where the image's OpenSSL looks


def test_the_agents_learn_their_node_and_zone_from_the_downward_api() -> None:
    (container,) = one("DaemonSet")["spec"]["template"]["spec"]["containers"]
    fields = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"] if "valueFrom" in e}
    assert fields == {
        "NODE_NAME": "spec.nodeName",
        "NODE_ZONE": "metadata.labels['topology.kubernetes.io/zone']",
        "NODE_REGION": "metadata.labels['topology.kubernetes.io/region']",
    }


def _run_agent_script(tmp_path: Path, script: str, env: dict[str, str]) -> list[str]:
    """Run a container's shell command with /bin/sh as the image would, `tlsfleet-agent` replaced by a
    stand-in that records the argument vector it was given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "argv.json"
    stand_in = bin_dir / "tlsfleet-agent"
    stand_in.write_text(f"#!{sys.executable}\nimport json, sys\njson.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n")
    stand_in.chmod(0o755)
    done = subprocess.run(
        ["/bin/sh", "-c", script],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(record.read_text())


def _agent_env() -> dict[str, str]:
    (container,) = one("DaemonSet")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.mark.parametrize(
    ("node", "zone", "region", "name", "labels"),
    [
        ("ip-10-0-1-5.EC2.internal", "eu-west-1a", "", "ip-10-0-1-5-ec2-internal", ["zone=eu-west-1a"]),
        ("worker-3", "", "", "worker-3", []),
        (
            "gke-pool-1-abc",
            "europe-west1-b",
            "europe-west1",
            "gke-pool-1-abc",
            ["zone=europe-west1-b", "region=europe-west1"],
        ),
    ],
)
def test_the_agent_command_line_parses_with_the_real_agent_cli(
    tmp_path: Path, node: str, zone: str, region: str, name: str, labels: list[str]
) -> None:
    (container,) = one("DaemonSet")["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["/bin/sh", "-c"]
    argv = _run_agent_script(
        tmp_path, container["args"][0], {**_agent_env(), "NODE_NAME": node, "NODE_ZONE": zone, "NODE_REGION": region}
    )
    assert argv[0] == "serve"
    assert argv[argv.index("--connect") + 1] == "tlsfleet-coordinator:7443"
    assert argv[argv.index("--name") + 1] == name
    given = [argv[i + 1] for i, a in enumerate(argv) if a == "--label"]
    assert given == [f"node={node}", *labels]
    verbs, options = parse_command_line(agent_app, argv)
    assert verbs == ["serve"]
    assert options["name"] == name
    assert str(options["pki_dir"]) == _agent_env()["TLSFLEET_PKI_DIR"]


def test_the_agent_liveness_check_is_the_health_verb_for_the_same_name(tmp_path: Path) -> None:
    (container,) = one("DaemonSet")["spec"]["template"]["spec"]["containers"]
    shell, flag, script = container["livenessProbe"]["exec"]["command"]
    assert (shell, flag) == ("/bin/sh", "-c")
    argv = _run_agent_script(tmp_path, script, {**_agent_env(), "NODE_NAME": "ip-10-0-1-5.ec2.internal"})
    verbs, options = parse_command_line(agent_app, argv)
    assert verbs == ["health"]
    assert options["name"] == "ip-10-0-1-5-ec2-internal"
    assert options["address"] == "127.0.0.1:7443"  # the agent's --listen in the same pod
    serve = _run_agent_script(tmp_path, container["args"][0], {**_agent_env(), "NODE_NAME": "x"})
    assert serve[serve.index("--listen") + 1] == options["address"]
    assert options["timeout"] < container["livenessProbe"]["timeoutSeconds"]


def test_the_coordinator_command_line_parses_with_the_real_cli() -> None:
    (container,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    program, *argv = container["command"]
    assert program == "tlsfleet"
    verbs, options = parse_command_line(tlsfleet_app, argv)
    assert verbs == ["coordinator", "serve"]
    config_mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert str(options["config"]).startswith(config_mount["mountPath"] + "/")


def _write_config_map(into: Path) -> Path:
    data = one("ConfigMap", "tlsfleet-coordinator")["data"]
    for key, text in data.items():
        (into / key).write_text(text)
    return into / "coordinator.toml"


def test_the_configmap_is_a_config_the_coordinator_loads_and_agrees_with_the_pod(tmp_path: Path) -> None:
    config = load_config(_write_config_map(tmp_path))
    (container,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    state = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "state")
    assert config.storage.path.parent == Path(state)
    assert config.reports_dir.parent == Path(state)
    assert config.metrics_listen == f"0.0.0.0:{ports['metrics']}"
    assert config.agent_link is not None and config.agent_link.listen == f"0.0.0.0:{ports['agent-link']}"
    assert [r.name for r in config.reports] == ["cluster-view"]
    service_ports = {p["name"]: p["targetPort"] for p in one("Service")["spec"]["ports"]}
    assert set(service_ports) == set(ports) and all(service_ports[n] == n for n in ports)
    probe = container["livenessProbe"]["httpGet"]
    assert (probe["port"], probe["path"]) == ("metrics", "/metrics")


def test_the_inventory_finds_the_coordinator_identity_where_the_secret_is_mounted(tmp_path: Path) -> None:
    _write_config_map(tmp_path)
    spec = one("Deployment")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    pki_dir = Path(next(e["value"] for e in container["env"] if e["name"] == "TLSFLEET_PKI_DIR"))
    assert pki_dir == Path(next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "pki"))
    inventory = load_inventory(tmp_path / "inventory.toml", pki_dir=pki_dir)
    assert inventory.agents == ()  # they dial in
    secret = next(v["secret"] for v in spec["volumes"] if v["name"] == "pki")
    laid_out = {pki_dir / item["path"] for item in secret["items"]}
    c = inventory.credentials
    assert {c.ca, c.cert, c.key} == laid_out


def test_the_agents_find_their_identity_where_the_secret_is_mounted() -> None:
    (container,) = one("DaemonSet")["spec"]["template"]["spec"]["containers"]
    pki = _agent_env()["TLSFLEET_PKI_DIR"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"] if m["name"] == "agent-pki"}
    # `agent serve --pki-dir` reads PKI_DIR/ca.pem and PKI_DIR/agents/NAME.pem, NAME.key.
    assert set(mounts) == {f"{pki}/agents", f"{pki}/ca.pem"}
    assert mounts[f"{pki}/ca.pem"]["subPath"] == "ca.pem"


def test_the_readme_creates_the_secrets_the_manifests_use() -> None:
    readme = (BASE.parents[1] / "README.md").read_text()
    names = set()
    for doc in rendered():
        for volume in doc.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", []):
            if "secret" in volume:
                names.add(volume["secret"]["secretName"])
    assert names == {"tlsfleet-coordinator-pki", "tlsfleet-agent-pki"}
    for name in names:
        assert f"kubectl create secret generic {name}" in readme, name


def test_no_manifest_names_a_registry_host() -> None:
    images = {c["image"] for d in rendered() for c in _containers(d)}
    assert images == {"tlsfleet:0.1.0"}, "overlays choose the registry with kustomize `images:`"


# The base's pods in a stand-in for a cluster (sandbox.py): the ConfigMap's files and the Secrets'
# layout in /etc/tlsfleet, the PersistentVolumeClaim at /var/lib/tlsfleet, the root read-only; the
# coordinator's command, and the DaemonSet's shell command with its downward-API environment in a network
# namespace of its own (the pod's), reaching the coordinator's over a veth pair at the address the
# Service's name has in /etc/hosts; then the agent's liveness command, in the agent's namespace.
# `tlsfleet` and `tlsfleet-agent` on PATH become the service user as they exec the interpreter under test
# (which may sit where only root can reach it before that exec).
_CLUSTER = r"""
export TLSFLEET_PKI_DIR=/etc/tlsfleet/pki
$COORDINATOR_COMMAND 2> coordinator.log &
coordinator=$!
unshare --net /bin/sh -c 'while ! ip link show pod0 > /dev/null 2>&1; do sleep 0.05; done
    ip link set lo up && ip addr add 10.244.0.2/24 dev pod0 && ip link set pod0 up
    exec /bin/sh -c "$AGENT_ARGS"' 2> agent.log &
agent=$!
# Until unshare has made it, the agent's network namespace is still this one.
while [ "$(readlink /proc/$agent/ns/net)" = "$(readlink /proc/self/ns/net)" ]; do sleep 0.05; done
ip link add node0 type veth peer name pod0 netns $agent || fail "no veth pair"
ip addr add 10.244.0.1/24 dev node0 && ip link set node0 up
listed=1
for _ in $(seq 1 60); do
    if env TLSFLEET_COORDINATOR=127.0.0.1:7443 tlsfleet agents --no-local --json \
        --inventory /etc/tlsfleet/config/inventory.toml > agents.json 2> agents.err; then listed=0; break; fi
    sleep 0.5
done
set +e
nsenter --net=/proc/$agent/ns/net /bin/sh -c "$LIVENESS" > health.out 2>&1
echo "health_exit=$?" >&2
kill -TERM $agent $coordinator
wait $agent; echo "agent_exit=$?" >&2
wait $coordinator; echo "coordinator_exit=$?" >&2
echo "agents_exit=$listed" >&2
"""
_AS_SERVICE = '#!/bin/sh\nexec setpriv --reuid={uid} --regid={uid} --clear-groups -- {program} "$@"\n'


@pytest.mark.e2e
@pytest.mark.root
@pytest.mark.slow
def test_the_base_runs_a_coordinator_and_a_dial_out_agent_that_registers_with_the_nodes_labels(
    tmp_path: Path,
) -> None:
    sandbox.require_sandbox("nsenter")
    state, etc = sandbox.prepare(tmp_path)
    venv_bin = Path(sys.executable).parent
    node, agent_name = "node-a.Example.internal", "node-a-example-internal"
    # The fleet PKI where `tlsfleet pki` runs, then laid out as the two Secrets are (no CA key).
    pki = tmp_path / "pki"
    env = {**os.environ, "TLSFLEET_PKI_DIR": str(pki)}
    for command in (
        ["pki", "init"],
        ["pki", "issue", "coordinator", "coordinator"],
        ["pki", "issue", "agent", agent_name],
    ):
        done = subprocess.run(
            [str(venv_bin / "tlsfleet"), *command], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
    secrets = etc / "tlsfleet" / "pki"
    for relative in (
        "ca.pem",
        "coordinators/coordinator.pem",
        "coordinators/coordinator.key",
        f"agents/{agent_name}.pem",
        f"agents/{agent_name}.key",
    ):
        (secrets / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(pki / relative, secrets / relative)
    for path in [secrets, *secrets.rglob("*")]:
        os.chown(path, 0, sandbox.SERVICE_UID)
        path.chmod(0o550 if path.is_dir() else 0o440)  # the Secret volumes' defaultMode, fsGroup
    config_dir = etc / "tlsfleet" / "config"
    config_dir.mkdir()
    for key, text in one("ConfigMap", "tlsfleet-coordinator")["data"].items():
        (config_dir / key).write_text(text)
    (etc / "hosts").write_text(Path("/etc/hosts").read_text() + "\n10.244.0.1 tlsfleet-coordinator\n")
    wrappers = etc / "tlsfleet-test-bin"
    wrappers.mkdir()
    for program in ("tlsfleet", "tlsfleet-agent"):
        (wrappers / program).write_text(_AS_SERVICE.format(uid=sandbox.SERVICE_UID, program=venv_bin / program))
        (wrappers / program).chmod(0o755)

    (coordinator_container,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    (agent_container,) = one("DaemonSet")["spec"]["template"]["spec"]["containers"]
    process = sandbox.start(
        tmp_path,
        _CLUSTER,
        {
            "PATH": "/etc/tlsfleet-test-bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "COORDINATOR_COMMAND": " ".join(coordinator_container["command"]),
            "AGENT_ARGS": agent_container["args"][0],
            "LIVENESS": agent_container["livenessProbe"]["exec"]["command"][2],
            **_agent_env(),
            "NODE_NAME": node,
            "NODE_ZONE": "zone-a",
            "NODE_REGION": "",
        },
    )
    try:
        _, err = process.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    lines = err.splitlines(keepends=True)
    sandbox.skip_if_unbuildable(process, lines)
    results = dict(line.strip().split("=", 1) for line in lines if re.match(r"^\w+_exit=\d+$", line.strip()))
    logs = "".join((state / name).read_text() for name in ("agents.err", "agent.log", "coordinator.log"))
    assert results == {"health_exit": "0", "agent_exit": "0", "coordinator_exit": "0", "agents_exit": "0"}, (
        results,
        logs[-3000:],
    )
    (listed,) = json.loads((state / "agents.json").read_text())["agents"]
    assert (listed["agent"], listed["kind"], listed["state"]) == (agent_name, "dial-in", "ok")
    assert listed["labels"] == {"node": node, "zone": "zone-a"}  # no region: the wrapper left it out
    assert f"serving: agent {agent_name} at " in (state / "health.out").read_text()
    assert (state / "history.sqlite").is_file()
