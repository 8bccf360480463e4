"""Source blocks: the unit in which unauthenticated connections are counted.

A host with an IPv6 /64 has 2^64 addresses, so limits and penalties counted
per address would be empty words against it.  ``--per-source-netblock V4:V6``
(default ``32:64``) says how many leading bits name a source: every address of
a /64 is one block, every IPv4 address its own.  An IPv4-mapped IPv6 address
(``::ffff:192.0.2.1``, what a dual-stack socket reports) counts as the IPv4
address it carries.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DEFAULT_NETBLOCK = (32, 64)


class NetblockError(ValueError):
    """A ``--per-source-netblock`` value that cannot be used."""


@dataclass(frozen=True)
class Netblock:
    """How many leading bits of an address name its source block."""

    v4_bits: int = DEFAULT_NETBLOCK[0]
    v6_bits: int = DEFAULT_NETBLOCK[1]

    @classmethod
    def parse(cls, text: str) -> Netblock:
        """``V4:V6`` such as ``32:64``; a single number sets IPv4 and leaves IPv6 at 64."""
        v4, colon, v6 = text.strip().partition(":")
        try:
            v4_bits = int(v4)
            v6_bits = int(v6) if colon else DEFAULT_NETBLOCK[1]
        except ValueError:
            raise NetblockError(f"{text!r} is not V4:V6 prefix lengths such as 32:64") from None
        if not 0 <= v4_bits <= 32 or not 0 <= v6_bits <= 128:
            raise NetblockError(f"{text!r}: IPv4 takes 0..32 bits and IPv6 0..128")
        return cls(v4_bits, v6_bits)

    def spell(self) -> str:
        return f"{self.v4_bits}:{self.v6_bits}"

    def block_of(self, address: str) -> str:
        """The block ``address`` belongs to, as a network: ``2001:db8:1:2::/64``."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return address  # not an IP (a Unix socket's path): its own block
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        bits = self.v4_bits if ip.version == 4 else self.v6_bits
        return str(ipaddress.ip_network((ip, bits), strict=False))
