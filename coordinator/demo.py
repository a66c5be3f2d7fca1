"""`tlsfleet demo`: a private CA, a TLS server, two agents that differ in one way, and the comparison.

Everything runs on loopback from a temporary folder and is removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
import time
from pathlib import Path

from tlsfleet.coordinator import exit_codes


def _system_bundle() -> bytes:
    """The host's default CA file, so the demo agents trust what this machine trusts, plus or minus one root."""
    cafile = ssl.get_default_verify_paths().cafile
    if cafile and Path(cafile).is_file():
        return Path(cafile).read_bytes()
    return b""


def run_demo() -> int:
    from tlsfleet.agent.fleet_pki import init_fleet_ca, issue
    from tlsfleet.coordinator.lab.agent_process import AgentProcess, start_agent, trust_env
    from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
    from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer
    from tlsfleet.coordinator.probe_command import ProbeArguments, run_probe
    from tlsfleet.coordinator.render import make_console

    console = make_console()
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="tlsfleet-demo-"))
    server: TlsServer | None = None
    agents: list[AgentProcess] = []
    try:
        console.rule("tlsfleet demo")
        console.print(f"Working in {workdir} (removed at the end).")
        acme = LabPKI("Acme Internal")
        leaf = acme.issue_leaf("localhost", "127.0.0.1")
        server = TlsServer(ServedIdentity.of(leaf, acme.intermediate), host="127.0.0.1").start()
        console.print(
            f"1. A TLS server on 127.0.0.1:{server.port} serves a certificate for 'localhost' issued by the "
            "private CA 'Acme Internal Root CA'."
        )

        pki_dir = workdir / "fleet-pki"
        init_fleet_ca(pki_dir)
        issue(pki_dir, "coordinator", "coordinator")
        system = _system_bundle()
        with_private = write_pem(workdir / "web-1-ca-bundle.pem", system + acme.root_pem())
        without_private = write_pem(workdir / "billing-1-ca-bundle.pem", system)
        console.print(
            "2. Two agents start, talking mutual TLS with a throwaway fleet CA. They differ in one way only:\n"
            "   web-1's trust store has the Acme root; billing-1's is the plain system bundle."
        )
        for name, env_label, bundle in (("web-1", "prod", with_private), ("billing-1", "prod", without_private)):
            issue(pki_dir, "agent", name)
            agents.append(
                start_agent(
                    name,
                    workdir,
                    env=trust_env(workdir, bundle),
                    labels=[("env", env_label), ("team", name.split("-")[0])],
                    insecure=False,
                    extra_args=["--pki-dir", str(pki_dir)],
                )
            )
        inventory = workdir / "inventory.toml"
        inventory.write_text(
            f'[coordinator]\npki_dir = "{pki_dir}"\n\n' + "\n".join(a.inventory_entry() for a in agents)
        )
        console.print(f"3. The inventory lists them ({inventory.name}); now one command asks both:\n")
        console.print(f"   $ tlsfleet probe localhost:{server.port} --inventory {inventory.name} --no-local\n")
        code = run_probe(
            ProbeArguments(target=f"localhost:{server.port}", inventory=inventory, no_local=True, timeout=10.0)
        )
        console.print(
            "\nweb-1 verifies the chain; billing-1 gets 'unknown_issuer' (OpenSSL code 20) for the very same "
            "chain (same leaf sha256): the private root is missing from billing-1's trust store, not a server fault."
        )
        console.print(f"(probe exit code {code}: 1 means some vantage saw a problem)")
    except KeyboardInterrupt:
        console.print("interrupted; cleaning up")
        return 130
    finally:
        for agent in agents:
            agent.stop()
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    console.print(f"Demo finished in {time.perf_counter() - started:.1f} s; agents stopped, {workdir} removed.")
    return exit_codes.OK
