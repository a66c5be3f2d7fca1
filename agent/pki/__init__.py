"""The fleet PKI: the CA that issues every identity, and the mutual-TLS credentials made from it."""
