"""A fixed Diffie-Hellman group for lab servers that offer a too-small one on purpose.

`openssl dhparam 1024` searches for a fresh safe prime, which takes from under a second to several; a
published group is as small and is there at once. RFC 2409's Second Oakley Group (1024-bit MODP, generator
2) is the one old servers shipped with. It is written out as PKCS#3 PEM (`openssl dhparam -check` passes it),
since `cryptography` deprecates building finite-field DH parameters.
"""

from __future__ import annotations

__all__ = ["OAKLEY_GROUP_2_BITS", "oakley_group_2_pem"]

OAKLEY_GROUP_2_BITS = 1024
_OAKLEY_GROUP_2_PEM = b"""-----BEGIN DH PARAMETERS-----
MIGHAoGBAP//////////yQ/aoiFowjTExmKLgNwc0SkCTgiKZ8x0Agu+pjsTmyJR
Sgh5jjQE3e+VGbPNOkMbMCsKbfJfFDdP4TVtbVHCReSFtXZiXn7G9ExC6aY37WsL
/1y29Aa37e44a/taiZ+lrp8kEXxLH+ZJKGZR7OZTgf//////////AgEC
-----END DH PARAMETERS-----
"""


def oakley_group_2_pem() -> bytes:
    """The group as PKCS#3 PEM ("BEGIN DH PARAMETERS"), which `openssl s_server -dhparam` reads."""
    return _OAKLEY_GROUP_2_PEM
