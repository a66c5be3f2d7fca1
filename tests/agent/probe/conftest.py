"""Fixtures of the probe tests that run real OpenSSL servers and clients."""

from tests.agent.probe.openssl_lab import lab as lab  # the fixture, by its name
