"""A real PostgreSQL server for the lab and the history's tests: a fresh cluster in a temporary directory, on
a loopback port (its unix socket in that directory), fsync off, with `ssl = on` and a lab identity (or off),
trusting every local connection or asking for a password, stopped by its PID.

PostgreSQL refuses to run as root, so under root the cluster belongs to `nobody` and both `initdb` and
`postgres` run as that user through `setpriv` (which execs: the PID is the server's own). The binaries are
looked for on PATH and in /usr/local/bin and PostgreSQL's Debian directories; `PostgresUnavailable` says
why a server cannot be started, for a test to skip with.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .tls_server import ServedIdentity

__all__ = ["PostgresCluster", "PostgresUnavailable", "find_binary"]

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_RUN_AS = "nobody"
_INITDB_OPTIONS = ("--no-sync", "--locale=C", "--encoding=UTF8", "--no-instructions")
_SEARCH = ("/usr/local/bin", *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True))


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be run here; the message says why."""


def find_binary(name: str) -> str:
    found = shutil.which(name) or next((f"{d}/{name}" for d in _SEARCH if os.access(f"{d}/{name}", os.X_OK)), None)
    if found is None:
        raise PostgresUnavailable(f"{name} is not installed (looked on PATH and in {', '.join(_SEARCH)})")
    return found


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass
class PostgresCluster:
    """One initdb'd cluster; `start()` runs a server on it, `stop()` ends that server, `remove()` the files.

    With a `password`, the superuser `user` must give it (scram-sha-256), as a deployed server asks; without,
    every connection is trusted. `identity` is the server's TLS certificate, needed for `ssl=True`."""

    identity: ServedIdentity | None = None
    host: str = "127.0.0.1"
    port: int = 0
    user: str = "postgres"
    password: str | None = None
    max_connections: int = 10
    directory: Path = field(init=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._postgres = find_binary("postgres")
        initdb = find_binary("initdb")
        self._wrapper: list[str] = []
        self._owner: tuple[int, int] | None = None
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                raise PostgresUnavailable("running as root and setpriv is missing, so postgres cannot drop root")
            user = pwd.getpwnam(_RUN_AS)
            self._owner = (user.pw_uid, user.pw_gid)
            self._wrapper = [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]
        # Not under pytest's tmp_path: its parents are private to root, and the server's user must enter.
        self.directory = Path(tempfile.mkdtemp(prefix="tlsfleet-pg-"))
        try:
            self._chown(self.directory)
            data = self.directory / "data"
            auth = ["--auth=trust"]
            if self.password is not None:
                secret = self.directory / "password"
                secret.write_text(self.password + "\n")
                self._chown(secret)
                auth = ["--auth=scram-sha-256", f"--pwfile={secret}"]
            done = subprocess.run(
                [*self._wrapper, initdb, "-D", str(data), "-U", self.user, *auth, *_INITDB_OPTIONS],
                capture_output=True,
                timeout=120,
                check=False,
                cwd=self.directory,
            )
            if done.returncode != 0:
                raise PostgresUnavailable(f"initdb failed: {done.stderr.decode(errors='replace').strip()[-300:]}")
            if self.identity is not None:
                (self.directory / "server.crt").write_bytes(self.identity.cert_chain_pem)
                key = self.directory / "server.key"
                key.write_bytes(self.identity.key_pem)
                key.chmod(0o600)
                for path in (self.directory / "server.crt", key):
                    self._chown(path)
        except BaseException:
            self.remove()
            raise

    def _chown(self, path: Path) -> None:
        if self._owner is not None:
            os.chown(path, *self._owner)

    def start(self, *, ssl: bool = True) -> PostgresCluster:
        """Run the server (ssl on or off) and wait until it accepts TCP connections."""
        if self._process is not None:
            raise RuntimeError("this PostgreSQL server is already running")
        if ssl and self.identity is None:
            raise ValueError("ssl=True needs the cluster's TLS identity")
        self.port = self.port or _free_port(self.host)
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.directory),
            "ssl": "on" if ssl else "off",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "8MB" if self.max_connections <= 10 else "32MB",
            "max_connections": str(self.max_connections),
        }
        if ssl:
            settings |= {
                "ssl_cert_file": str(self.directory / "server.crt"),
                "ssl_key_file": str(self.directory / "server.key"),
            }
        command = [*self._wrapper, self._postgres, "-D", str(self.directory / "data")]
        for key, value in settings.items():
            command += ["-c", f"{key}={value}"]
        log = open(self.directory / "server.log", "ab")  # noqa: SIM115 - the child keeps it
        try:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.directory
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = (self.directory / "server.log").read_text(errors="replace")[-500:]
                self._process = None
                raise PostgresUnavailable(f"postgres exited at start: {tail.strip()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise PostgresUnavailable(f"postgres did not listen on {self.host}:{self.port} within {START_TIMEOUT:g} s")

    def stop(self) -> None:
        """SIGINT (PostgreSQL's fast shutdown) to the server's PID, then SIGKILL if it lingers."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def log_tail(self, chars: int = 2000) -> str:
        log = self.directory / "server.log"
        return log.read_text(errors="replace")[-chars:] if log.exists() else ""

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
