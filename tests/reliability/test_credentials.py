"""Issue 6 item 2: tokens that live two seconds. No 401 reaches the user (none is even sent), and many threads
sharing one credential cause one refresh per token lifetime.

The emulator runs without a fixed token, so it accepts any bearer token except a JWT whose ``exp`` has passed,
which it answers with 401 like the real service.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import namedtuple

from azure_sessions import AzureDynamicSessionsExecutor, SessionsClient
from tests.reliability.support import new_identifier, raw_request, run_together
from tests.support.scripted_model import ScriptedModel, code_reply

AccessToken = namedtuple("AccessToken", ["token", "expires_on"])
LIFETIME = 2.0


def jwt(exp: float, serial: int) -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'exp': exp, 'n': serial, 'aud': 'dynamicsessions'})}.sig"


class ShortLivedCredential:
    """A TokenCredential whose tokens expire ``LIFETIME`` seconds after issue; records every fetch."""

    def __init__(self) -> None:
        self.fetches: list[tuple[float, float]] = []  # (issued at, expires at)
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(0.02)  # a real credential takes a while: concurrent callers would pile in here
            now = time.time()
            expires = now + LIFETIME
            with self._lock:
                self.fetches.append((now, expires))
                serial = len(self.fetches)
            return AccessToken(jwt(expires, serial), expires)
        finally:
            with self._lock:
                self.active -= 1


def count_statuses(client: SessionsClient, seen: list[int]) -> None:
    """Record the status of every HTTP reply the client receives (so a retried-away 401 is still seen)."""
    client._http.hooks["response"].append(lambda response, *args, **kwargs: seen.append(response.status_code))


def test_the_emulator_rejects_an_expired_jwt(start_emulator_checked) -> None:
    emu = start_emulator_checked(token=None, prestart=0)
    path = f"files?api-version=2024-10-02-preview&identifier={new_identifier()}"
    status, body, headers = raw_request(emu.endpoint, "GET", path, jwt(time.time() - 5, 1))
    assert status == 401 and b"expired" in body and headers["x-ms-error-code"] == "Unauthorized"
    status, _, _ = raw_request(emu.endpoint, "GET", path, jwt(time.time() + 60, 2))
    assert status == 200


def test_a_long_agent_run_with_two_second_tokens_sees_no_401(start_emulator_checked) -> None:
    emu = start_emulator_checked(token=None, prestart=1)
    credential = ShortLivedCredential()
    executor = AzureDynamicSessionsExecutor(pool_management_endpoint=emu.endpoint, credential=credential)
    statuses: list[int] = []
    count_statuses(executor.client, statuses)
    steps = [code_reply(f"import time\ntime.sleep(0.7)\ntotal = {n} + globals().get('total', 0)\nprint(total)")
             for n in range(1, 8)]  # fmt: skip
    model = ScriptedModel([*steps, code_reply("final_answer(total)")])
    from smolagents import CodeAgent

    agent = CodeAgent(tools=[], model=model, executor=executor, max_steps=12, verbosity_level=0)
    started = time.monotonic()
    try:
        answer = agent.run("sum the numbers slowly")
    finally:
        executor.cleanup()
    assert answer == 28
    assert time.monotonic() - started > 3 * LIFETIME / 2  # the run outlived several tokens
    assert len(credential.fetches) >= 3
    assert 401 not in statuses and statuses, statuses  # no 401 was ever sent back, let alone shown


def test_32_threads_sharing_one_credential_refresh_once_per_lifetime(start_emulator_checked) -> None:
    emu = start_emulator_checked(token=None, prestart=4)
    credential = ShortLivedCredential()
    identifiers = [new_identifier() for _ in range(4)]
    clients = [SessionsClient(emu.endpoint, identifiers[n % 4], credential) for n in range(32)]
    statuses: list[int] = []
    for client in clients:
        count_statuses(client, statuses)
    errors: list[BaseException] = []
    stop = time.monotonic() + 3 * LIFETIME
    barrier = threading.Barrier(len(clients))

    def hammer(client: SessionsClient) -> None:
        barrier.wait()
        try:
            while time.monotonic() < stop:
                client.list_files()
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    run_together(hammer, clients)
    for client in clients:
        client.close()
    assert errors == []
    assert 401 not in statuses and len(statuses) > 100
    assert credential.max_active == 1  # never two refreshes at once
    # One fetch per lifetime: a new token is fetched only once the previous one reached its refresh point
    # (half its remaining lifetime for tokens this short), never by every client on its own.
    for (issued, expires), (next_issued, _) in zip(credential.fetches, credential.fetches[1:], strict=False):
        assert next_issued >= issued + (expires - issued) / 2 - 0.05, credential.fetches
    assert 3 <= len(credential.fetches) <= 3 * LIFETIME / (LIFETIME / 4) + 1


def test_static_token_mismatch_is_a_clear_401_not_a_retry_loop(start_emulator_checked) -> None:
    emu = start_emulator_checked(token="the-right-token", prestart=0)
    client = SessionsClient(emu.endpoint, new_identifier(), "a-wrong-token")
    statuses: list[int] = []
    count_statuses(client, statuses)
    try:
        client.list_files()
    except Exception as exc:
        assert type(exc).__name__ == "ClientAuthenticationError" and "credential" in str(exc)
        assert "a-wrong-token" not in str(exc) and "the-right-token" not in str(exc)
    else:
        raise AssertionError("a wrong token was accepted")
    finally:
        client.close()
    assert statuses == [401]  # a static token cannot be refreshed: no pointless retry
