"""The fleet PKI on real files: creating it, the `tlsfleet pki` commands, and checking credentials."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from tlsfleet.agent.pki.credentials import (
    CredentialError,
    channel_options_for_peer,
    check_peer_allowed,
    load_credentials,
    peer_identity,
)
from tlsfleet.agent.pki.fleet_ca import (
    FleetPkiError,
    identity_dns_name,
    init_fleet_ca,
    inventory,
    issue,
)
from tlsfleet.agent.pki.location import default_pki_dir
from tlsfleet.coordinator.cli.pki import app


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cert_of(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    d = tmp_path / "pki"
    init_fleet_ca(d)
    return d


# --- creating the PKI -------------------------------------------------------------------------


def test_init_writes_a_ca_with_a_private_key_and_directory(tmp_path: Path) -> None:
    d = tmp_path / "new" / "pki"
    paths = init_fleet_ca(d, common_name="Example fleet CA", days=30)
    assert (paths.cert, paths.key) == (d / "ca.pem", d / "ca.key")
    assert mode(d) == 0o700
    assert mode(paths.key) == 0o600
    ca = cert_of(paths.cert)
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Example fleet CA"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"
    left = ca.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=30, seconds=-5) <= left <= timedelta(days=30)
    key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
    assert key.public_key() == ca.public_key()
    assert not list(d.glob(".*.tmp")), "temporary files must not be left behind"


def test_init_refuses_to_replace_a_ca_unless_forced(pki: Path) -> None:
    before = (pki / "ca.pem").read_bytes()
    with pytest.raises(FleetPkiError, match=r"already exists at .*ca\.pem.*--force"):
        init_fleet_ca(pki)
    assert (pki / "ca.pem").read_bytes() == before
    init_fleet_ca(pki, force=True)
    assert (pki / "ca.pem").read_bytes() != before


@pytest.mark.parametrize("days", [0, -1, 36501])
def test_init_refuses_a_nonsense_validity(tmp_path: Path, days: int) -> None:
    with pytest.raises(FleetPkiError, match="use 1 to 36500 days"):
        init_fleet_ca(tmp_path / "pki", days=days)
    assert not (tmp_path / "pki").exists()


@pytest.mark.parametrize("role", ["agent", "coordinator"])
def test_issue_writes_an_identity_certificate(pki: Path, role: str) -> None:
    paths = issue(pki, role, "Web-1")  # type: ignore[arg-type]
    assert paths.cert == pki / f"{role}s" / "web-1.pem"
    assert paths.key == pki / f"{role}s" / "web-1.key"
    assert mode(paths.key) == 0o600
    cert = cert_of(paths.cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "web-1"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [f"web-1.{role}.tlsfleet"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(cert_of(pki / "ca.pem"))
    left = cert.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=824) < left <= timedelta(days=825)
    key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
    assert key.public_key() == cert.public_key()


def test_identity_dns_name() -> None:
    assert identity_dns_name("agent", "web-1") == "web-1.agent.tlsfleet"
    assert identity_dns_name("coordinator", "OPS") == "ops.coordinator.tlsfleet"
    with pytest.raises(FleetPkiError, match="a role is one of agent, coordinator"):
        identity_dns_name("robot", "x")


@pytest.mark.parametrize(
    "name",
    ["", "-web", "web-", "web_1", "web.1", "web 1", " web", "a" * 64, "wéb", "\u212aelvin", "web/../x"],
)
def test_issue_refuses_invalid_names(pki: Path, name: str) -> None:
    with pytest.raises(FleetPkiError, match=r"invalid name .*1-63 characters of a-z, 0-9 and '-'"):
        issue(pki, "agent", name)
    assert not (pki / "agents").exists()


def test_issue_refuses_the_reserved_agent_name_but_not_a_coordinator_of_that_name(pki: Path) -> None:
    # `agent serve` and the inventory refuse an agent named 'local', so its certificate would be of no use.
    with pytest.raises(FleetPkiError, match="agent name 'local' is reserved"):
        issue(pki, "agent", "LOCAL")
    assert not (pki / "agents").exists()
    assert issue(pki, "coordinator", "local").cert.name == "local.pem"


@pytest.mark.parametrize("name", ["a", "0", "a" * 63, "web-1-eu-west"])
def test_issue_accepts_valid_names(pki: Path, name: str) -> None:
    assert issue(pki, "agent", name).cert.name == f"{name}.pem"


def test_issue_without_a_ca_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(FleetPkiError, match=r"no fleet CA at .*ca\.pem; create one with `tlsfleet pki init"):
        issue(tmp_path, "agent", "web-1")


def test_issue_refuses_to_replace_unless_forced(pki: Path) -> None:
    first = issue(pki, "agent", "web-1").cert.read_bytes()
    with pytest.raises(FleetPkiError, match=r"agent certificate for 'web-1' already exists at .*web-1\.pem"):
        issue(pki, "agent", "WEB-1")
    assert (pki / "agents" / "web-1.pem").read_bytes() == first
    assert issue(pki, "agent", "web-1", force=True).cert.read_bytes() != first


def test_issue_caps_validity_at_the_ca_expiry(tmp_path: Path) -> None:
    init_fleet_ca(tmp_path, days=10)
    cert = cert_of(issue(tmp_path, "agent", "web-1", days=825).cert)
    assert cert.not_valid_after_utc == cert_of(tmp_path / "ca.pem").not_valid_after_utc


def test_issue_refuses_explicit_dates_it_cannot_honour(pki: Path) -> None:
    now = datetime.now(UTC)
    with pytest.raises(FleetPkiError, match="after the fleet CA expires"):
        issue(pki, "agent", "web-1", not_after=now + timedelta(days=4000))
    with pytest.raises(FleetPkiError, match="validity period is empty"):
        issue(pki, "agent", "web-1", not_before=now, not_after=now - timedelta(days=1))
    with pytest.raises(FleetPkiError, match="timezone-aware"):
        issue(pki, "agent", "web-1", not_after=datetime.now() + timedelta(days=1))


def test_issue_refuses_a_ca_key_that_does_not_match(pki: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    init_fleet_ca(other)
    (pki / "ca.key").write_bytes((other / "ca.key").read_bytes())
    with pytest.raises(FleetPkiError, match=r"ca\.key does not match the CA certificate"):
        issue(pki, "agent", "web-1")


def test_default_pki_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TLSFLEET_PKI_DIR", str(tmp_path / "here"))
    assert default_pki_dir() == tmp_path / "here"
    monkeypatch.delenv("TLSFLEET_PKI_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_pki_dir() == tmp_path / ".config" / "tlsfleet" / "pki"


def test_inventory_lists_certificates_and_flags_foreign_ones(pki: Path, tmp_path: Path) -> None:
    issue(pki, "agent", "web-1")
    issue(pki, "coordinator", "ops")
    other = tmp_path / "other"
    init_fleet_ca(other)
    foreign = issue(other, "agent", "web-9")
    (pki / "agents" / "web-9.pem").write_bytes(foreign.cert.read_bytes())
    (pki / "agents" / "junk.pem").write_text("not a certificate")
    inv = inventory(pki)
    assert inv.ca.role == "ca"
    assert inv.ca.issued_by_ca
    assert [(i.role, i.name, i.issued_by_ca) for i in inv.issued] == [
        ("agent", "web-1", True),
        ("agent", "web-9", False),
        ("coordinator", "ops", True),
    ]
    assert [p.name for p, _ in inv.unreadable] == ["junk.pem"]


# --- the `tlsfleet pki` commands --------------------------------------------------------------

runner = CliRunner()


def test_cli_init_issue_show(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    result = runner.invoke(app, ["init", "--dir", str(d)])
    assert result.exit_code == 0, result.output
    assert f"wrote {d / 'ca.pem'} (fleet CA 'tlsfleet fleet CA', valid until " in result.stdout
    assert f"wrote {d / 'ca.key'} (CA private key, mode 0600" in result.stdout

    result = runner.invoke(app, ["issue", "agent", "Web-1", "--dir", str(d), "--days", "30"])
    assert result.exit_code == 0, result.output
    until = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%d")
    assert f"wrote {d / 'agents' / 'web-1.pem'} (agent web-1, valid until {until}" in result.stdout
    assert f"wrote {d / 'agents' / 'web-1.key'} (private key of agent web-1, mode 0600)" in result.stdout

    result = runner.invoke(app, ["issue", "coordinator", "ops-1", "--dir", str(d)])
    assert result.exit_code == 0, result.output
    assert (d / "coordinators" / "ops-1.pem").exists()

    result = runner.invoke(app, ["show", "--dir", str(d)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("CA           CN=tlsfleet fleet CA  until ")
    assert lines[1].startswith("agent web-1 ") and "(29 days left)" in lines[1]
    assert lines[2].startswith("coordinator ops-1 ")

    result = runner.invoke(app, ["show", "--dir", str(d), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [(i["role"], i["name"]) for i in doc["issued"]] == [("agent", "web-1"), ("coordinator", "ops-1")]


def test_cli_uses_the_environment_directory(tmp_path: Path) -> None:
    d = tmp_path / "env-pki"
    result = runner.invoke(app, ["init"], env={"TLSFLEET_PKI_DIR": str(d)})
    assert result.exit_code == 0, result.output
    assert (d / "ca.pem").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["issue", "agent", "web_1"], "error: invalid name 'web_1': a name is 1-63 characters"),
        (["issue", "agent", "web-1"], "error: no fleet CA at "),
        (["show"], "error: no fleet CA at "),
        (["init", "--days", "0"], "error: invalid validity of 0 days"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, [*args, "--dir", str(tmp_path / "pki")])
    assert result.exit_code == 2
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_cli_refuses_to_replace_the_ca(pki: Path) -> None:
    result = runner.invoke(app, ["init", "--dir", str(pki)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: a fleet CA already exists at {pki / 'ca.pem'}; replacing it invalidates every "
        "certificate it issued (use --force to replace it)\n"
    )
    assert runner.invoke(app, ["init", "--dir", str(pki), "--force"]).exit_code == 0


def test_cli_refuses_an_unknown_role(pki: Path) -> None:
    result = runner.invoke(app, ["issue", "robot", "x", "--dir", str(pki)])
    assert result.exit_code == 2
    # The message is boxed and wrapped to the terminal width, so look for its words.
    words = result.output.split()
    assert "'robot'" in words and "'agent'," in words and "'coordinator'." in words


def test_cli_module_is_cheap_to_import() -> None:
    import subprocess
    import sys

    code = (
        "import sys, tlsfleet.coordinator.cli.pki; "
        "print(sorted(m for m in ('grpc', 'cryptography') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "[]"


# --- checking credentials -----------------------------------------------------------------------


def paths_for(pki: Path, role: str, name: str) -> tuple[Path, Path, Path]:
    sub = pki / f"{role}s"
    return pki / "ca.pem", sub / f"{name}.pem", sub / f"{name}.key"


def test_load_credentials_accepts_a_good_identity(pki: Path) -> None:
    issued = issue(pki, "coordinator", "ops-1")
    creds = load_credentials(pki / "ca.pem", issued.cert, issued.key, expect_role="coordinator")
    assert (creds.role, creds.name) == ("coordinator", "ops-1")
    assert creds.cert_pem == issued.cert.read_bytes()
    assert creds.key_pem == issued.key.read_bytes()
    assert creds.ca_pem == (pki / "ca.pem").read_bytes()
    assert creds.not_after == cert_of(issued.cert).not_valid_after_utc


@pytest.mark.parametrize("which", ["ca", "cert", "key"])
def test_missing_file(pki: Path, which: str) -> None:
    issue(pki, "agent", "web-1")
    ca, cert, key = paths_for(pki, "agent", "web-1")
    files = {"ca": ca, "cert": cert, "key": key}
    files[which].unlink()
    with pytest.raises(CredentialError) as e:
        load_credentials(ca, cert, key, expect_role="agent")
    assert str(e.value).endswith(f"{files[which]}: no such file")


def test_directory_instead_of_a_file(pki: Path) -> None:
    issue(pki, "agent", "web-1")
    ca, _, key = paths_for(pki, "agent", "web-1")
    with pytest.raises(CredentialError, match=r"^certificate .*/agents: is a directory, not a file$"):
        load_credentials(ca, pki / "agents", key, expect_role="agent")


def test_path_through_a_file(pki: Path) -> None:
    issue(pki, "agent", "web-1")
    ca, cert, _ = paths_for(pki, "agent", "web-1")
    bogus = ca / "web-1.key"
    with pytest.raises(CredentialError, match=r"^private key .*ca\.pem/web-1\.key: cannot read: Not a directory$"):
        load_credentials(ca, cert, bogus, expect_role="agent")


def test_unreadable_file(pki: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode; unreadable files cannot be made")
    issue(pki, "agent", "web-1")
    ca, cert, key = paths_for(pki, "agent", "web-1")
    key.chmod(0)
    with pytest.raises(CredentialError, match=r"^private key .*web-1\.key: cannot read: Permission denied$"):
        load_credentials(ca, cert, key, expect_role="agent")


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("ca", r"^CA file .*ca\.pem: not a PEM certificate$"),
        ("cert", r"^certificate .*web-1\.pem: not a PEM certificate$"),
        ("key", r"^private key .*web-1\.key: not a PEM private key$"),
    ],
)
def test_not_pem(pki: Path, which: str, message: str) -> None:
    issue(pki, "agent", "web-1")
    ca, cert, key = paths_for(pki, "agent", "web-1")
    {"ca": ca, "cert": cert, "key": key}[which].write_text("hello\n")
    with pytest.raises(CredentialError, match=message):
        load_credentials(ca, cert, key, expect_role="agent")


def test_encrypted_key(pki: Path) -> None:
    issue(pki, "agent", "web-1")
    ca, cert, key = paths_for(pki, "agent", "web-1")
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(CredentialError, match=r"^private key .*web-1\.key: is encrypted"):
        load_credentials(ca, cert, key, expect_role="agent")


def test_expired_certificate_names_the_date(pki: Path) -> None:
    end = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    issue(pki, "agent", "web-1", not_before=end - timedelta(days=30), not_after=end)
    ca, cert, key = paths_for(pki, "agent", "web-1")
    # The CA itself was made today, so the check runs at a time when it is valid.
    later = datetime.now(UTC) + timedelta(hours=1)
    with pytest.raises(CredentialError) as e:
        load_credentials(ca, cert, key, expect_role="agent", now=later)
    assert str(e.value) == (
        f"certificate {cert}: expired on 2026-01-02 03:04:05 UTC; "
        "issue a new one with `tlsfleet pki issue agent web-1 --force`"
    )


def test_not_yet_valid_certificate(pki: Path) -> None:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    issue(pki, "agent", "web-1", not_before=start, not_after=start + timedelta(days=10))
    ca, cert, key = paths_for(pki, "agent", "web-1")
    with pytest.raises(CredentialError) as e:
        load_credentials(ca, cert, key, expect_role="agent")
    assert str(e.value).startswith(f"certificate {cert}: not valid until {start:%Y-%m-%d %H:%M:%S} UTC, ")
    assert "is the clock behind?" in str(e.value)


def test_expired_ca(tmp_path: Path) -> None:
    init_fleet_ca(tmp_path, days=1)
    issue(tmp_path, "agent", "web-1")
    ca, cert, key = paths_for(tmp_path, "agent", "web-1")
    with pytest.raises(CredentialError, match=r"^CA file .*ca\.pem: expired on .*`tlsfleet pki init --force`$"):
        load_credentials(ca, cert, key, expect_role="agent", now=datetime.now(UTC) + timedelta(days=2))


def test_certificate_from_another_ca_with_the_same_name(pki: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    init_fleet_ca(other)
    stranger = issue(other, "agent", "web-1")
    with pytest.raises(CredentialError) as e:
        load_credentials(pki / "ca.pem", stranger.cert, stranger.key, expect_role="agent")
    message = str(e.value)
    assert message.startswith(f"certificate {stranger.cert}: issued by 'CN=tlsfleet fleet CA' (key id ")
    assert ", but the fleet CA is 'CN=tlsfleet fleet CA' (key id " in message
    ours = cert_of(pki / "ca.pem").extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    theirs = cert_of(other / "ca.pem").extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ours.digest.hex(":")[:23] in message
    assert theirs.digest.hex(":")[:23] in message


def test_ca_bundle_holding_two_fleet_cas_accepts_both(pki: Path, tmp_path: Path) -> None:
    """While a fleet moves to a new CA, ca.pem holds both."""
    new = tmp_path / "new"
    init_fleet_ca(new, common_name="tlsfleet fleet CA 2")
    old_cert = issue(pki, "agent", "web-1")
    new_cert = issue(new, "agent", "web-2")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes((pki / "ca.pem").read_bytes() + (new / "ca.pem").read_bytes())
    for issued in (old_cert, new_cert):
        assert load_credentials(bundle, issued.cert, issued.key, expect_role="agent").role == "agent"


def test_leaf_given_as_the_ca(pki: Path) -> None:
    issued = issue(pki, "agent", "web-1")
    with pytest.raises(CredentialError, match=r"^CA file .*web-1\.pem: 'CN=web-1' is not a CA certificate"):
        load_credentials(issued.cert, issued.cert, issued.key, expect_role="agent")


def test_key_that_does_not_match(pki: Path) -> None:
    one = issue(pki, "agent", "web-1")
    two = issue(pki, "agent", "web-2")
    with pytest.raises(CredentialError) as e:
        load_credentials(pki / "ca.pem", one.cert, two.key, expect_role="agent")
    assert str(e.value) == f"private key {two.key}: does not match certificate {one.cert}"


def test_wrong_role(pki: Path) -> None:
    agent = issue(pki, "agent", "web-1")
    with pytest.raises(CredentialError) as e:
        load_credentials(pki / "ca.pem", agent.cert, agent.key, expect_role="coordinator")
    assert str(e.value) == (
        f"certificate {agent.cert}: this is an agent certificate; a coordinator certificate is needed"
    )
    coordinator = issue(pki, "coordinator", "ops")
    with pytest.raises(CredentialError) as e:
        load_credentials(pki / "ca.pem", coordinator.cert, coordinator.key, expect_role="agent")
    assert str(e.value) == (
        f"certificate {coordinator.cert}: this is a coordinator certificate; an agent certificate is needed"
    )


def test_certificate_without_a_tlsfleet_identity(pki: Path, tmp_path: Path) -> None:
    """Signed by the fleet CA, but naming only an ordinary host, as a hand-made certificate might."""
    ca_cert = cert_of(pki / "ca.pem")
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "web-1")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("web-1.example.com")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "web-1.pem", tmp_path / "web-1.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    with pytest.raises(CredentialError, match=r"^certificate .*web-1\.pem: carries no tlsfleet identity"):
        load_credentials(pki / "ca.pem", cert_path, key_path, expect_role="agent")


def test_unknown_expected_role(pki: Path) -> None:
    issued = issue(pki, "agent", "web-1")
    with pytest.raises(CredentialError, match="unknown role 'robot'"):
        load_credentials(pki / "ca.pem", issued.cert, issued.key, expect_role="robot")


# --- peer identity and the allow list (pure) ------------------------------------------------------


def test_peer_identity_from_auth_context() -> None:
    ctx = {
        "transport_security_type": [b"ssl"],
        "x509_subject_alternative_name": [b"ops-1.coordinator.tlsfleet"],
    }
    assert peer_identity(ctx) == ("coordinator", "ops-1")
    assert peer_identity({"transport_security_type": [b"insecure"]}) is None
    assert peer_identity({"x509_subject_alternative_name": [b"www.example.com"]}) is None
    assert peer_identity({"x509_subject_alternative_name": [b"bad_name.agent.tlsfleet"]}) is None
    # Two identities in one certificate would let it pass as either: refuse it.
    two = [b"ops-1.coordinator.tlsfleet", b"web-1.agent.tlsfleet"]
    assert peer_identity({"x509_subject_alternative_name": two}) is None


def test_check_peer_allowed() -> None:
    allowed = ["ops-1", "OPS-2"]
    assert check_peer_allowed(("coordinator", "ops-2"), role="coordinator", allowed_names=allowed) is None
    assert check_peer_allowed(None, role="coordinator", allowed_names=allowed) == (
        "the caller presented no tlsfleet identity; only a coordinator certificate from the fleet CA is accepted"
    )
    assert check_peer_allowed(("agent", "ops-1"), role="coordinator", allowed_names=allowed) == (
        "the caller is agent 'ops-1'; only a coordinator may call this service"
    )
    assert check_peer_allowed(("coordinator", "ops-3"), role="coordinator", allowed_names=allowed) == (
        "coordinator 'ops-3' is not allowed to call this service (allowed: ops-1, ops-2)"
    )
    assert check_peer_allowed(("coordinator", "ops-3"), role="coordinator", allowed_names=()) == (
        "coordinator 'ops-3' is not allowed to call this service (no coordinator is allowed)"
    )
    many = [f"c{i}" for i in range(8)]
    assert check_peer_allowed(("coordinator", "x"), role="coordinator", allowed_names=many) == (
        "coordinator 'x' is not allowed to call this service (allowed: c0, c1, c2, c3, c4 and 3 more)"
    )


def test_channel_options_for_peer() -> None:
    assert channel_options_for_peer("agent", "Web-1") == [("grpc.ssl_target_name_override", "web-1.agent.tlsfleet")]
    with pytest.raises(ValueError, match="invalid name 'web_1'"):
        channel_options_for_peer("agent", "web_1")
