"""The pool management endpoint: checked once, normalized, and read for the pool's name and kind."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

AZURE_HOST_SUFFIX = ".dynamicsessions.io"
"""Hosts of Azure's own pools (``https://<region>.dynamicsessions.io/...``)."""
_POOL_SEGMENT = "sessionpools"


@dataclass(frozen=True, slots=True)
class PoolEndpoint:
    """A pool management endpoint, as :meth:`parse` accepts it."""

    url: str
    """``scheme://host/path``, without a trailing slash or query."""
    query: str
    """The query string the endpoint was given with, sent along with every call ("" when none)."""

    @classmethod
    def parse(cls, endpoint: str) -> PoolEndpoint:
        """Check and normalize ``endpoint``; :class:`ValueError` when it is not an http(s) URL with a host."""
        parts = urlsplit(endpoint or "")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"endpoint must be an http(s) URL (the pool management endpoint), got {endpoint!r}")
        return cls(urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", "")), parts.query)

    @property
    def host(self) -> str:
        """``host[:port]``, for messages."""
        return urlsplit(self.url).netloc

    @property
    def is_azure(self) -> bool:
        """True for a pool of Azure's own service (as opposed to the local emulator or another server)."""
        hostname = urlsplit(self.url).hostname
        return bool(hostname and hostname.endswith(AZURE_HOST_SUFFIX))

    @property
    def pool_name(self) -> str:
        return pool_name_from_endpoint(self.url)


def pool_name_from_endpoint(endpoint: str) -> str:
    """The ``<name>`` of ``.../sessionPools/<name>``; else the last path segment; else the host.

    ``sessionPools`` is matched in any letter case, since Azure matches the type segments of a resource path
    case-insensitively; the name keeps its own case, as written in the endpoint.
    """
    parts = urlsplit(endpoint)
    segments = [segment for segment in parts.path.split("/") if segment]
    for index, segment in enumerate(segments[:-1]):
        if segment.lower() == _POOL_SEGMENT:
            return segments[index + 1]
    return segments[-1] if segments else parts.netloc or endpoint
