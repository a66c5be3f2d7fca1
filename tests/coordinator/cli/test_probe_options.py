"""`tlsfleet probe --sni-variants`: each variant is one more fan-out to every vantage, so their number is bounded."""

from __future__ import annotations

import re

import pytest

from tlsfleet.agent.errors import UsageError
from tlsfleet.coordinator.cli.probe import MAX_SNI_VARIANTS, parse_sni_variants


def test_variants_are_read_in_order_once_each() -> None:
    assert parse_sni_variants("none,www.example.com,NONE,www.example.com") == (None, "www.example.com")


def test_as_many_variants_as_the_cap_are_accepted_and_one_more_is_refused() -> None:
    names = [f"n{i}.example.com" for i in range(MAX_SNI_VARIANTS + 1)]
    assert len(parse_sni_variants(",".join(names[:-1]))) == MAX_SNI_VARIANTS
    with pytest.raises(UsageError, match=f"--sni-variants names 17 variants; at most {MAX_SNI_VARIANTS} are accepted"):
        parse_sni_variants(",".join(names))


@pytest.mark.parametrize("item", ["127.0.0.1", "127.1", "::1", "[2001:db8::1]"])
def test_an_ip_address_among_the_variants_is_refused_as_sni_carries_none(item: str) -> None:
    with pytest.raises(UsageError, match=rf"--sni-variants item '{re.escape(item)}' is an IP address"):
        parse_sni_variants(f"none,{item}")
