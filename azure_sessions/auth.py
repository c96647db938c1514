"""Credentials → cached bearer tokens, refreshed before expiry under a lock, and the requests auth that sends them.

Accepted credentials:

* any object with ``get_token(*scopes)`` (an azure-core ``TokenCredential``, e.g. ``DefaultAzureCredential``);
* a zero-argument callable returning a token string (it is called again when the token nears expiry);
* a ``str``: a static token (for the local emulator);
* ``None``: a new :class:`DefaultCredential` (``azure.identity.DefaultAzureCredential``, built on first use).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import requests

from .errors import CredentialUnavailableError

DEFAULT_SCOPE = "https://dynamicsessions.io/.default"
MANAGED_IDENTITY_ENV = "AZURE_SESSIONS_MANAGED_IDENTITY_CLIENT_ID"
REFRESH_MARGIN_SECONDS = 300.0
"""Tokens are refreshed this long before they expire."""
UNKNOWN_EXPIRY_TTL_SECONDS = 300.0
"""How long a callable's token without a readable expiry is reused before the callable is asked again."""
_FAILED_REFRESH_BACKOFF_SECONDS = 30.0

_log = logging.getLogger(__name__)


def _jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (not verified; only used to schedule a refresh), or None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = parts[1] + "=" * (-len(parts[1]) % 4)
        exp = json.loads(base64.urlsafe_b64decode(payload)).get("exp")
    except (ValueError, AttributeError):
        return None
    return float(exp) if isinstance(exp, (int, float)) else None


class _TokenCache:
    """The cached token of one (credential, scope) and the lock that serializes its refresh."""

    __slots__ = ("lock", "state")

    def __init__(self, state: tuple[str, float, float] | None = None) -> None:
        self.lock = threading.Lock()
        # (token, refresh_at, expires_at): replaced as a whole, so readers never see a torn update.
        self.state = state


# Providers built on the same credential object share one cache, so many clients (one per browser session, one
# per thread...) cause one refresh per token lifetime instead of one each. Keyed weakly by the credential; the
# cache never references the credential, so an entry disappears with the last client that uses it.
_shared_caches: weakref.WeakKeyDictionary[Any, dict[str, _TokenCache]] = weakref.WeakKeyDictionary()
_shared_caches_lock = threading.Lock()


def _cache_for(credential: Any, scope: str) -> _TokenCache:
    try:
        with _shared_caches_lock:
            per_scope = _shared_caches.get(credential)
            if per_scope is None:
                per_scope = _shared_caches[credential] = {}
            return per_scope.setdefault(scope, _TokenCache())
    except TypeError:  # unhashable or not weak-referenceable: this provider keeps a cache of its own
        return _TokenCache()


class DefaultCredential:
    """``azure.identity.DefaultAzureCredential``, imported and built on the first token request.

    Building it costs nothing until a token is needed, so an application can make one at start-up and hand it to
    every client: clients given the same credential object share one token cache.

    :param managed_identity_client_id: the client id of a user-assigned managed identity to use (default: env
        ``AZURE_SESSIONS_MANAGED_IDENTITY_CLIENT_ID``, read now).
    """

    def __init__(self, managed_identity_client_id: str | None = None) -> None:
        self.managed_identity_client_id = managed_identity_client_id or os.environ.get(MANAGED_IDENTITY_ENV) or None
        self.kind = "DefaultAzureCredential" + (" (managed identity)" if self.managed_identity_client_id else "")
        self._built: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DefaultCredential(managed_identity_client_id={self.managed_identity_client_id!r})"

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        return self._azure().get_token(*scopes, **kwargs)

    def _azure(self) -> Any:
        with self._lock:
            if self._built is None:
                try:
                    from azure.identity import DefaultAzureCredential
                except ImportError as exc:
                    raise CredentialUnavailableError(
                        "no credential was given and azure-identity is not installed: `pip install azure-identity`, "
                        "or pass credential= (a TokenCredential, a callable returning a token, or a token string)."
                    ) from exc
                client_id = self.managed_identity_client_id
                self._built = DefaultAzureCredential(
                    **({"managed_identity_client_id": client_id} if client_id else {})
                )
            return self._built


class TokenProvider:
    """Turns a credential into bearer-token strings; thread-safe and cheap on the hot path.

    Providers (hence clients) given the same credential object and scope share one token cache and refresh it
    once per token lifetime. ``credential=None`` builds a :class:`DefaultCredential` per provider: pass one
    credential object to many clients to share its tokens.

    :param credential: see the module docstring.
    :param scope: token scope, default ``https://dynamicsessions.io/.default``.
    :param managed_identity_client_id: for the default credential only: the client id of the user-assigned
        managed identity to use (default: env ``AZURE_SESSIONS_MANAGED_IDENTITY_CLIENT_ID``).
    :param clock: time source (seconds since the epoch); tests inject a fake one.
    """

    def __init__(
        self,
        credential: Any = None,
        *,
        scope: str = DEFAULT_SCOPE,
        managed_identity_client_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.scope = scope
        self._clock = clock
        self._cache = _TokenCache()
        self._static = False
        self._fetch: Callable[[], tuple[str, float, float | None]]
        if isinstance(credential, str):
            if not credential:
                raise ValueError("a static token must be a non-empty string")
            self._static = True
            self._cache.state = (credential, float("inf"), float("inf"))
            self.kind = "static token"
        elif credential is None or callable(getattr(credential, "get_token", None)):
            if credential is None:
                credential = DefaultCredential(managed_identity_client_id)
            self._credential = credential
            self._cache = _cache_for(credential, scope)
            self._fetch = self._fetch_credential
            self.kind = credential.kind if isinstance(credential, DefaultCredential) else type(credential).__name__
        elif callable(credential):
            self._callable = credential
            self._cache = _cache_for(credential, scope)
            self._fetch = self._fetch_callable
            self.kind = "callable"
        else:
            raise TypeError(
                "credential must be an object with get_token(*scopes) (azure-core TokenCredential), a zero-argument "
                f"callable returning a token string, a static token string, or None; got {type(credential).__name__}"
            )

    def __repr__(self) -> str:
        return f"TokenProvider(kind={self.kind!r}, scope={self.scope!r}, token=<redacted>)"

    @property
    def is_static(self) -> bool:
        """True for a static token: it can never be refreshed."""
        return self._static

    def get_token(self) -> str:
        """A valid token: the cached one while it is fresh, else one refreshed under the lock (one caller fetches)."""
        cache = self._cache
        state = cache.state
        if state is not None and self._clock() < state[1]:
            return state[0]
        with cache.lock:
            state = cache.state
            if state is not None and self._clock() < state[1]:
                return state[0]
            return self._refresh(state)

    def invalidate(self, token: str | None = None) -> bool:
        """Forget ``token`` (the one a 401 rejected) so the next :meth:`get_token` fetches a new one.

        Returns whether a retry can get a different token: False for a static token. When another thread has
        already replaced ``token``, nothing is dropped and True is returned.
        """
        if self._static:
            return False
        cache = self._cache
        with cache.lock:
            if cache.state is not None and (token is None or cache.state[0] == token):
                cache.state = None
        return True

    def _refresh(self, previous: tuple[str, float, float] | None) -> str:
        now = self._clock()
        try:
            token, expires_at, refresh_on = self._fetch()
        except CredentialUnavailableError:
            raise
        except Exception as exc:
            if previous is not None and now < previous[2]:
                # The old token still works: keep it a little longer, try again later.
                _log.warning("token refresh failed (%s); reusing the current token for now", type(exc).__name__)
                self._cache.state = (previous[0], now + _FAILED_REFRESH_BACKOFF_SECONDS, previous[2])
                return previous[0]
            raise CredentialUnavailableError(
                f"could not get a token for {self.scope} from {self.kind}: {exc}. Sign in (`az login`), configure "
                "a managed identity, or pass credential=."
            ) from exc
        if not isinstance(token, str) or not token:
            raise CredentialUnavailableError(f"{self.kind} returned an empty token for {self.scope}")
        lifetime = expires_at - now
        refresh_at = (
            expires_at - REFRESH_MARGIN_SECONDS if lifetime > 2 * REFRESH_MARGIN_SECONDS else now + lifetime / 2
        )
        if refresh_on is not None:
            refresh_at = min(refresh_at, refresh_on)
        self._cache.state = (token, refresh_at, expires_at)
        return token

    def _fetch_credential(self) -> tuple[str, float, float | None]:
        access = self._credential.get_token(self.scope)
        if isinstance(access, str):
            expiry = _jwt_expiry(access)
            return access, expiry or self._clock() + UNKNOWN_EXPIRY_TTL_SECONDS, None
        token = access.token
        expires_on = float(access.expires_on)
        refresh_on = getattr(access, "refresh_on", None)
        return token, expires_on, float(refresh_on) if refresh_on else None

    def _fetch_callable(self) -> tuple[str, float, float | None]:
        token = self._callable()
        expiry = _jwt_expiry(token) if isinstance(token, str) else None
        return token, expiry or self._clock() + UNKNOWN_EXPIRY_TTL_SECONDS, None


class BearerAuth(requests.auth.AuthBase):
    """Sets ``Authorization: Bearer <token>`` from a :class:`TokenProvider` on every request (which also keeps
    requests from reading ``~/.netrc``), and after a 401 drops the token the service rejected."""

    def __init__(self, tokens: TokenProvider) -> None:
        self.tokens = tokens

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = "Bearer " + self.tokens.get_token()
        return request

    def renew(self, rejected: requests.Response) -> bool:
        """Forget the token that ``rejected`` (a 401 reply) was sent with.

        :returns: whether sending the request again can carry a different token (False for a static token).
        """
        sent = rejected.request.headers.get("Authorization") or ""
        return self.tokens.invalidate(sent.removeprefix("Bearer "))
