"""Raw HTTP probes for tests of request-size limits."""

from __future__ import annotations

import http.client

import httpx


def declare_body(url: str, path: str, length: int) -> tuple[int, bytes]:
    """POST only headers declaring a ``length``-byte body: the status and body of the answer,
    which has to come before any byte of the body is sent."""
    parsed = httpx.URL(url)
    connection = http.client.HTTPConnection(parsed.host, parsed.port, timeout=60)
    try:
        connection.putrequest("POST", path)
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(length))
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()
