"""Real Java and Node TLS clients for the runtime-store tests: one connection to a lab server on 127.0.0.1,
each client saying "OK" or why it refused, as the runtime itself words it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

DIRS = "/usr/local/bin:/usr/bin:/bin"
JAVA, JAVAC, KEYTOOL, NODE = (shutil.which(c, path=DIRS) for c in ("java", "javac", "keytool", "node"))

# Java's PKIX with endpoint identification "HTTPS", as an HTTPS client sets it: "OK", or the innermost cause's
# class and message ("sun.security.provider.certpath.SunCertPathBuilderException: unable to find ...").
_JAVA_CLIENT = r"""
import java.net.InetSocketAddress;
import java.net.Socket;
import javax.net.ssl.*;

public class TlsProbe {
    public static void main(String[] args) throws Exception {
        try (Socket plain = new Socket()) {
            plain.connect(new InetSocketAddress(args[0], Integer.parseInt(args[1])), 5000);
            plain.setSoTimeout(5000);
            SSLSocket tls = (SSLSocket) SSLContext.getDefault().getSocketFactory()
                .createSocket(plain, args[2], Integer.parseInt(args[1]), true);
            SSLParameters parameters = tls.getSSLParameters();
            parameters.setEndpointIdentificationAlgorithm("HTTPS");
            tls.setSSLParameters(parameters);
            tls.startHandshake();
            System.out.println("OK");
        } catch (SSLException e) {
            Throwable cause = e;
            while (cause.getCause() != null) cause = cause.getCause();
            System.out.println(cause.getClass().getName() + ": " + cause.getMessage());
        }
    }
}
"""
# Node's tls.connect with its own defaults: {"code": "OK"} or node's error code and message.
_NODE_CLIENT = r"""
const socket = require("tls").connect({host: "127.0.0.1", port: Number(process.argv[1]), servername: process.argv[2]});
socket.setTimeout(5000, () => { console.log(JSON.stringify({code: "TIMEOUT"})); process.exit(0); });
socket.on("secureConnect", () => { console.log(JSON.stringify({code: "OK"})); socket.destroy(); });
socket.on("error", (e) => { console.log(JSON.stringify({code: e.code || "", message: e.message})); });
"""


def compile_java_client(directory: Path) -> Path:
    """The Java client compiled into `directory` (its classpath)."""
    assert JAVAC is not None
    source = directory / "TlsProbe.java"
    source.write_text(_JAVA_CLIENT)
    done = subprocess.run([JAVAC, "-d", str(directory), str(source)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return directory


def java_says(classes: Path, truststore: Path, port: int, name: str, *properties: str) -> str:
    """What Java, trusting the PKCS#12 `truststore` (password changeit), says of the server at `port` for `name`."""
    assert JAVA is not None
    argv = [JAVA, f"-Djavax.net.ssl.trustStore={truststore}", "-Djavax.net.ssl.trustStorePassword=changeit"]
    argv += [*properties, "-cp", str(classes), "TlsProbe", "127.0.0.1", str(port), name]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env={"PATH": DIRS})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def node_says(env: dict[str, str], port: int, name: str) -> tuple[str, str]:
    """(node's error code or OK, its message) for a connection to the server at `port` for `name`."""
    assert NODE is not None
    done = subprocess.run(
        [NODE, "-e", _NODE_CLIENT, str(port), name], env=env, capture_output=True, timeout=20, check=False, text=True
    )
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout.strip().splitlines()[-1])
    return str(said["code"]), str(said.get("message", ""))
