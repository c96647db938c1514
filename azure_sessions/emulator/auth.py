"""Bearer-token checks: a required ``Authorization: Bearer`` header, the one configured token, unexpired JWTs."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time

from . import errors
from .files import iso_time


def check_bearer(header: str, expected: str | None) -> None:
    """Raise a 401 ``EmulatorError`` unless ``header`` carries an acceptable bearer token.

    With ``expected`` only that token is accepted; without it any non-empty token is. Either way a JWT-shaped
    token whose ``exp`` has passed is refused, as the service refuses expired Entra ID tokens.
    """
    scheme, _, credential = header.partition(" ")
    token = credential.strip()
    if scheme.lower() != "bearer" or not token:
        raise errors.unauthorized("An 'Authorization: Bearer <token>' header is required.")
    if expected is not None and not hmac.compare_digest(token.encode(), expected.encode()):
        raise errors.unauthorized("The bearer token is not valid for this session pool.")
    expiry = jwt_expiry(token)
    if expiry is not None and expiry <= time.time():
        raise errors.unauthorized(
            f"The bearer token expired at {iso_time(expiry)}; get a new one (credentials refresh tokens before "
            "they expire)."
        )


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT-shaped token (the signature is not checked), else None (opaque token)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None
