"""The TLS context of the mesh's HTTP clients: httpx2's default trust store, loaded once per process.

httpx2 builds a new context for every client, parsing the whole trust store (milliseconds of CPU)
even for a client that only ever speaks http://, and an agent makes several clients as it starts.
One shared context trusts exactly what each of them would have (it is httpx2's default, with
SSL_CERT_FILE and SSL_CERT_DIR honoured); `mesh up`'s launcher builds it before it forks, so every
forked agent starts with it built.
"""

from __future__ import annotations

import functools
import ssl

import httpx2

__all__ = ["client_context"]


@functools.cache
def client_context() -> ssl.SSLContext:
    """The context to pass as `verify=` to an httpx2 client of the mesh."""
    return httpx2.create_ssl_context()
