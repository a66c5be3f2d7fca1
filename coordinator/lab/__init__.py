"""The lab: a throwaway PKI, real TLS servers and real agent processes on loopback.

Shared by the tests, the benchmarks and `tlsfleet demo`, so what the demonstration shows is what the
tests prove.
"""
