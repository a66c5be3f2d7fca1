"""tlsfleet: one TLS handshake, seen from every host at once."""

__version__ = "0.1.0"
