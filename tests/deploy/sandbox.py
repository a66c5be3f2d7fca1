"""A stand-in for a service's sandbox, as root: a mount and a network namespace in which
/var/lib/tlsfleet is a bind mount of a temporary directory, /etc an overlay the test writes its files
into, the root file system read-only, /tmp private, only loopback up, and the service run as nobody.

The test passes a shell script; it runs after the set-up with `as_service CMD...` to run a command as the
service user. A set-up step this machine cannot do exits 97, which the test reports as a skip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from collections.abc import Mapping
from pathlib import Path

import pytest

SERVICE_UID = 65534  # nobody: a user that owns nothing outside the state directory
SETUP_FAILED = 97
CHECKOUT = Path(__file__).resolve().parents[2]

_SETUP = r"""
set -e
fail() { echo "sandbox: $1" >&2; exit 97; }
ip link set lo up || fail "no loopback"
mount -t tmpfs -o mode=0755 tmpfs /var/lib || fail "cannot mount a tmpfs on /var/lib"
mkdir /var/lib/tlsfleet
mount --bind "$SANDBOX_STATE" /var/lib/tlsfleet || fail "cannot bind the state directory"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$SANDBOX_UPPER,workdir=$SANDBOX_WORK" /etc \
    || fail "no overlayfs for /etc"
# The test's files for /etc, as an installation would put them.
cp -a "$SANDBOX_ETC/." /etc/
mount -o remount,ro /etc || fail "cannot make /etc read-only"
# A checkout under /tmp would vanish under the private /tmp: hold it aside and put it back in place.
case "$SANDBOX_CODE" in /tmp/*)
    mkdir /var/lib/.checkout && mount --bind "$SANDBOX_CODE" /var/lib/.checkout || fail "cannot hold the checkout";;
esac
mount -o remount,bind,ro / || fail "cannot make / read-only"
mount -t tmpfs tmpfs /tmp || fail "cannot give a private /tmp"
case "$SANDBOX_CODE" in /tmp/*)
    mkdir -p "$SANDBOX_CODE" && mount --bind /var/lib/.checkout "$SANDBOX_CODE" || fail "cannot restore the checkout";;
esac
cd /var/lib/tlsfleet
as_service() { setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@"; }
export HOME=/nonexistent PYTHONDONTWRITEBYTECODE=1
"""


def require_sandbox(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: a mount and network namespace stand in for the service's sandbox")
    missing = [tool for tool in ("unshare", "setpriv", "ip", *tools) if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} to build the service's sandbox")
    require_service_user_reaches(Path(sysconfig.get_paths()["purelib"]))


def require_service_user_reaches(path: Path) -> None:
    """Skip unless the service user can read `path` (the test venv's packages, inside this checkout)."""
    probe = subprocess.run(
        ["setpriv", f"--reuid={SERVICE_UID}", f"--regid={SERVICE_UID}", "--clear-groups", "test", "-r", str(path)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(
            f"the service user (uid {SERVICE_UID}) cannot read {path}: a directory above it is closed to others "
            f"(e.g. a checkout made by mktemp -d, mode 0700); `chmod o+x` it to run this test"
        )


def prepare(root: Path) -> tuple[Path, Path]:
    """The state directory (owned by the service user, mode 0700) and the tree copied onto /etc."""
    state, etc = root / "state", root / "etc"
    for d in (state, etc, root / "upper", root / "work"):
        d.mkdir()
    os.chown(state, SERVICE_UID, SERVICE_UID)
    state.chmod(0o700)
    root.chmod(0o755)
    return state, etc


def start(root: Path, script: str, env: Mapping[str, str]) -> subprocess.Popen[str]:
    """Run `script` in the sandbox built under `root` (see prepare); its stderr is piped."""
    full_env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "SANDBOX_STATE": str(root / "state"),
        "SANDBOX_ETC": str(root / "etc"),
        "SANDBOX_UPPER": str(root / "upper"),
        "SANDBOX_WORK": str(root / "work"),
        "SANDBOX_CODE": str(CHECKOUT),
        **env,
    }
    return subprocess.Popen(
        ["unshare", "--mount", "--net", "--propagation", "private", "/bin/sh", "-c", _SETUP + script],
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def skip_if_unbuildable(process: subprocess.Popen[str], lines: list[str]) -> None:
    if process.poll() == SETUP_FAILED:
        pytest.skip("cannot build the service's sandbox here: " + "".join(lines[-3:]).strip())
