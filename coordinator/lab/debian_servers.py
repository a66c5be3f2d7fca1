"""Debian's own mail and directory servers for the STARTTLS lab: Postfix, Dovecot (IMAP and POP3) and slapd,
each from a configuration of its own in a temporary directory, on a loopback port, stopped by its PID.

No system service is touched: Postfix runs `master -c DIR` with its own queue directory, Dovecot `dovecot -c
FILE`, slapd `slapd -f FILE -h ldap://127.0.0.1:PORT/`. Each runs in the foreground, leading a process
group of its own, so the PID the lab holds is the server's and stopping it stops its children. Postfix's and
Dovecot's masters need root (their children drop to `postfix`, `dovenull` and `dovecot`); slapd drops to
`openldap` when started as root. `DebianServerUnavailable` says why a server cannot run here, for a test to
skip with.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from .tls_server import ServedIdentity

__all__ = ["DebianServerUnavailable", "Dovecot", "Postfix", "Slapd", "SmtpService"]

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
MAIL_HOSTNAME = "mail.debian.test"
POSTFIX_MASTER = "/usr/lib/postfix/sbin/master"


class DebianServerUnavailable(RuntimeError):
    """The server cannot be run here; the message says why."""


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _binary(path: str, package: str) -> str:
    found = path if os.access(path, os.X_OK) else shutil.which(os.path.basename(path))
    if found is None:
        raise DebianServerUnavailable(f"{path} is not installed (Debian package {package})")
    return found


def _user(name: str, package: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise DebianServerUnavailable(f"the user {name} is missing (the {package} package creates it)") from None


def _as_root(server: str) -> None:
    if os.geteuid() != 0:
        raise DebianServerUnavailable(
            f"{server}'s master process must start as root, and this runs as uid {os.geteuid()}"
        )


class _Server:
    """One server process in a temporary directory (mode 0755: the servers' own users enter it)."""

    name = "server"
    log_name = "server.log"

    def __init__(self, identity: ServedIdentity | None, host: str) -> None:
        self.identity = identity
        self.host = host
        self.directory = Path(tempfile.mkdtemp(prefix=f"tlsfleet-{self.name}-"))
        self.directory.chmod(0o755)
        self._process: subprocess.Popen[bytes] | None = None

    def _write_identity(
        self, identity: ServedIdentity, name: str = "server", owner: pwd.struct_passwd | None = None
    ) -> tuple[Path, Path]:
        """The chain (leaf first) and the key as files `name`-chain.pem and `name`-key.pem in the directory,
        the key readable by `owner` alone (root's by default)."""
        chain, key = self.directory / f"{name}-chain.pem", self.directory / f"{name}-key.pem"
        chain.write_bytes(identity.cert_chain_pem)
        key.write_bytes(identity.key_pem)
        key.chmod(0o600)
        if owner is not None:
            for path in (chain, key):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        return chain, key

    def _run(self, command: list[str], ports: tuple[int, ...]) -> None:
        """Start `command` and wait until every one of `ports` accepts a TCP connection."""
        log = open(self.directory / "stdout.log", "ab")  # noqa: SIM115 - the child keeps it
        try:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.directory, process_group=0
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        waiting = list(ports)
        while waiting and time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                raise DebianServerUnavailable(f"{self.name} exited at start: {self.log_tail(600).strip()}")
            try:
                socket.create_connection((self.host, waiting[0]), timeout=0.5).close()
                waiting.pop(0)
            except OSError:
                time.sleep(0.05)
        if waiting:
            self.stop()
            raise DebianServerUnavailable(
                f"{self.name} did not listen on {self.host}:{waiting[0]} in {START_TIMEOUT:g} s"
            )

    def stop(self) -> None:
        """SIGTERM to the server's process group (its PID: it leads a group of its own), then SIGKILL."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT)

    def log_tail(self, chars: int = 2000) -> str:
        text = ""
        for name in dict.fromkeys(("stdout.log", self.log_name)):
            path = self.directory / name
            if path.exists():
                text += path.read_text(errors="replace")
        return text[-chars:]

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def start(self) -> Self:
        """Write the configuration, run the server, and wait until it listens."""
        raise NotImplementedError


@dataclass(frozen=True)
class SmtpService:
    """One listener of a Postfix instance: smtpd itself, or postscreen in front of it (`greet_wait` whole
    seconds, after its `220-` teaser). With an identity it offers STARTTLS (`smtpd_tls_security_level = may`),
    without one none; `settings` override main.cf for this listener alone (master.cf's `-o`), as a port 587
    next to port 25 does: `smtpd_tls_auth_only`, `smtpd_client_restrictions`, `mynetworks`, postscreen's lists."""

    identity: ServedIdentity | None
    settings: Mapping[str, str] = field(default_factory=dict)
    greet_wait: int | None = None


class Postfix(_Server):
    """One Postfix master serving each of `services` on a loopback port of its own (`ports[name]`).

    postscreen hands the clients it lets through to a shared smtpd that presents `pass_identity`; 127.0.0.1
    is in mynetworks unless a listener's settings say otherwise (postscreen lets mynetworks through untested,
    so a postscreen listener that should hold the greeting back leaves it out)."""

    name = "postfix"
    log_name = "maillog"

    def __init__(
        self,
        services: Mapping[str, SmtpService],
        *,
        pass_identity: ServedIdentity | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        _as_root("Postfix")
        master = _binary(POSTFIX_MASTER, "postfix")
        postfix = _binary("/usr/sbin/postfix", "postfix")
        owner = _user("postfix", "postfix")
        super().__init__(pass_identity, host)
        self.services = dict(services)
        self.ports: dict[str, int] = {}
        self._master = master
        self._postfix = postfix
        self._owner = owner

    def _tls(self, name: str, identity: ServedIdentity | None) -> dict[str, str]:
        if identity is None:
            return {"smtpd_tls_security_level": "none"}
        # Postfix splits a file list on spaces and commas: `name` is a port or one word, never a listener's name.
        chain, key = self._write_identity(identity, name)
        return {"smtpd_tls_security_level": "may", "smtpd_tls_chain_files": f"{key}, {chain}"}

    def start(self) -> Self:
        queue, data = self.directory / "queue", self.directory / "data"
        queue.mkdir(exist_ok=True)
        data.mkdir(exist_ok=True)
        os.chown(data, self._owner.pw_uid, self._owner.pw_gid)
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(queue),
            "data_directory": str(data),
            "meta_directory": "/etc/postfix",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": MAIL_HOSTNAME,
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": self.host,
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "maillog_file_prefixes": str(self.directory),
            "maillog_file": str(self.directory / "maillog"),
            **self._tls("pass", self.identity),
        }
        lines = [
            "smtpd pass - - n - - smtpd",
            "tlsmgr unix - - n 1000? 1 tlsmgr",
            "anvil unix - - n - 1 anvil",
            "proxymap unix - - n - - proxymap",
            "dnsblog unix - - n - 0 dnsblog",
            "tlsproxy unix - - n - 0 tlsproxy",
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        for name, service in self.services.items():
            self.ports[name] = self.ports.get(name) or _free_port(self.host)
            listen = f"{self.host}:{self.ports[name]} inet n - n -"
            if service.greet_wait is None:
                options = self._tls(str(self.ports[name]), service.identity) | dict(service.settings)
                lines.append(f"{listen} - smtpd{_overrides(options)}")
            else:
                options = {
                    "postscreen_greet_wait": f"{service.greet_wait}s",
                    "postscreen_greet_action": "enforce",
                    "postscreen_cache_map": f"btree:{data}/postscreen-{self.ports[name]}",
                    **self._tls(str(self.ports[name]), service.identity),
                    **service.settings,
                }
                lines.append(f"{listen} 1 postscreen{_overrides(options)}")
        (self.directory / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main.items()))
        (self.directory / "master.cf").write_text("".join(f"{line}\n" for line in lines))
        # `postfix check` makes the queue's directories with their owners, as `postfix start` would.
        checked = subprocess.run(
            [self._postfix, "-c", str(self.directory), "check"], capture_output=True, timeout=60, check=False
        )
        if checked.returncode != 0:
            raise DebianServerUnavailable(f"postfix check failed: {self.log_tail(600).strip()}")
        self._run([self._master, "-c", str(self.directory), "-d"], tuple(self.ports.values()))
        return self


def _overrides(settings: Mapping[str, str]) -> str:
    # master.cf's `-o { name = value }` keeps the spaces and commas a value has.
    return "".join(f" -o {{ {name} = {value} }}" for name, value in settings.items())


class Dovecot(_Server):
    """Dovecot's IMAP and POP3 logins on `imap_port` and `pop3_port`; `ssl` is Dovecot's own setting
    ("yes", "required", or "no", which it must be without an identity)."""

    name = "dovecot"
    log_name = "dovecot.log"

    def __init__(self, identity: ServedIdentity | None, *, ssl: str = "yes", host: str = "127.0.0.1") -> None:
        _as_root("Dovecot")
        self._dovecot = _binary("/usr/sbin/dovecot", "dovecot-core")
        for user in ("dovecot", "dovenull"):
            _user(user, "dovecot-core")
        for login in ("imap-login", "pop3-login"):
            _binary(f"/usr/lib/dovecot/{login}", f"dovecot-{login[:4]}d")
        if ssl != "no" and identity is None:
            raise ValueError(f"ssl = {ssl} needs an identity")
        self.ssl = ssl
        self.imap_port = 0
        self.pop3_port = 0
        super().__init__(identity, host)

    def start(self) -> Self:
        self.imap_port = self.imap_port or _free_port(self.host)
        self.pop3_port = self.pop3_port or _free_port(self.host)
        tls = f"ssl = {self.ssl}\n"
        if self.identity is not None:
            chain, key = self._write_identity(self.identity)
            tls += f"ssl_cert = <{chain}\nssl_key = <{key}\n"
        config = self.directory / "dovecot.conf"
        config.write_text(
            f"""protocols = imap pop3
listen = {self.host}
base_dir = {self.directory}/run
state_dir = {self.directory}/state
log_path = {self.directory}/dovecot.log
instance_name = tlsfleet-{self.directory.name}
default_internal_user = dovecot
default_login_user = dovenull
{tls}auth_mechanisms = plain
passdb {{
  driver = static
  args = password=unused
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={self.directory}/home
}}
mail_location = maildir:{self.directory}/mail
service imap-login {{
  inet_listener imap {{
    address = {self.host}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {self.host}
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""
        )
        self._run([self._dovecot, "-c", str(config), "-F"], (self.imap_port, self.pop3_port))
        return self


class Slapd(_Server):
    """slapd with one empty mdb database, on `port`; with an identity StartTLS presents it (TLSCertificateFile
    and TLSCertificateKeyFile), without one no TLS is configured and slapd refuses StartTLS."""

    name = "slapd"
    log_name = "stdout.log"

    def __init__(self, identity: ServedIdentity | None, *, host: str = "127.0.0.1") -> None:
        self._slapd = _binary("/usr/sbin/slapd", "slapd")
        self._owner = _user("openldap", "slapd") if os.geteuid() == 0 else None
        for needed in ("/usr/lib/ldap/back_mdb.so", "/etc/ldap/schema/core.schema"):
            if not os.path.exists(needed):
                raise DebianServerUnavailable(f"{needed} is missing (Debian package slapd)")
        self.port = 0
        super().__init__(identity, host)

    def start(self) -> Self:
        self.port = self.port or _free_port(self.host)
        database = self.directory / "db"
        database.mkdir(exist_ok=True)
        tls = ""
        if self.identity is not None:
            chain, key = self._write_identity(self.identity, owner=self._owner)
            tls = f"TLSCertificateFile {chain}\nTLSCertificateKeyFile {key}\n"
        config = self.directory / "slapd.conf"
        config.write_text(
            f"""include /etc/ldap/schema/core.schema
pidfile {self.directory}/slapd.pid
argsfile {self.directory}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
{tls}database mdb
suffix "dc=lab,dc=test"
directory {database}
maxsize 10485760
"""
        )
        command = [self._slapd, "-f", str(config), "-h", f"ldap://{self.host}:{self.port}/", "-d", "0"]
        if self._owner is not None:
            for path in (self.directory, database):
                os.chown(path, self._owner.pw_uid, self._owner.pw_gid)
            command += ["-u", "openldap", "-g", "openldap"]
        self._run(command, (self.port,))
        return self
