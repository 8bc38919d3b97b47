"""Which hosts are this machine's loopback: the one rule the agent runtime and the registry share.

A leaf like `mesh.errors`: it imports nothing from mesh, so any module may use it.
"""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine's loopback: `localhost`, 127.0.0.0/8 or ::1 (bracketed or IPv4-mapped too).

    Decided on the address, never on a prefix of the text, so a name such as `127.example.com` is
    not loopback: binding or trusting it as one would open the door to the network.
    """
    if host.lower() == "localhost":
        return True
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # a URL's IPv6 form
    try:
        address = ipaddress.ip_address(literal)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
