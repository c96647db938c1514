"""Following a running execution's output as it is written, where the endpoint can stream it (the local emulator's
``GET .emulator/output`` route; the service itself has no such operation).

:class:`OutputFollower` reads the stream in a thread of its own while :meth:`SessionsClient.execute` waits for the
result, and hands each piece of text to the caller's ``on_output(stream, text)``. When the execution returns, the
client stops it: it waits briefly for the stream's end (so the callback normally sees all of the output), then
closes a gate under which every callback runs, so no text is handed over once ``execute`` has returned. The result
remains the whole truth; the callback only previews it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

import requests

log = logging.getLogger("azure_sessions.client")

OutputCallback = Callable[[str, str], None]
"""``on_output(stream, text)``: text a running execution wrote to ``stream`` (``"stdout"`` or ``"stderr"``)."""
STREAMS = frozenset({"stdout", "stderr"})
NOT_STREAMING = frozenset({400, 404, 405, 501})
"""Replies of an endpoint that has no live-output route (the service's answer to an unknown operation)."""


class OutputFollower:
    """Reads one execution's live output in a daemon thread and hands it to ``on_output``, until :meth:`stop`.

    :param open_stream: sends the stream's request (``stream=True``) and returns the response.
    :param on_output: called with ``(stream, text)`` from the follower's thread, never after :meth:`stop` returned.
    :param learned: told whether the endpoint streams (True: it answered with the stream; False: it has no such
        route), once it is known.
    """

    def __init__(
        self,
        open_stream: Callable[[], requests.Response],
        on_output: OutputCallback,
        learned: Callable[[bool], None],
    ) -> None:
        self._open_stream = open_stream
        self._on_output = on_output
        self._learned = learned
        self._gate = threading.Lock()
        self._open = True
        self._ended = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="azure-sessions-live-output", daemon=True)

    def start(self) -> OutputFollower:
        self._thread.start()
        return self

    def stop(self, drain: float = 0.0) -> None:
        """Wait up to ``drain`` seconds for the stream's end (the execution has ended, so it comes at once), then
        close the gate: once this returns, ``on_output`` is never called again. The thread itself ends at the stream's
        next line (a quiet stream sends one every second)."""
        if drain > 0:
            self._ended.wait(drain)
        with self._gate:
            self._open = False

    def _follow(self) -> None:
        try:
            response = self._open_stream()
        except requests.RequestException as exc:  # the URL names the session: only the error's kind is logged
            log.debug("live output: the stream could not be opened (%s)", type(exc).__name__)
            self._ended.set()
            return
        try:
            if response.status_code != 200:
                if response.status_code in NOT_STREAMING:
                    self._learned(False)
                log.debug("live output: the endpoint answered HTTP %d; no live output", response.status_code)
                return
            self._learned(True)
            self._read(response)
        except (requests.RequestException, ValueError) as exc:
            log.debug("live output: the stream broke off (%s); the result still holds all of the output",
                      type(exc).__name__)  # fmt: skip
        finally:
            response.close()
            self._ended.set()

    def _read(self, response: requests.Response) -> None:
        for line in response.iter_lines(chunk_size=None):
            if not self._open:
                return
            if not line.strip():
                continue  # keep-alive
            message = json.loads(line)
            if not isinstance(message, dict) or "end" in message:
                return
            stream, text = message.get("stream"), message.get("text")
            if stream in STREAMS and isinstance(text, str) and text:
                self._deliver(stream, text)

    def _deliver(self, stream: str, text: str) -> None:
        with self._gate:
            if not self._open:
                return
            try:
                self._on_output(stream, text)
            except Exception:  # the caller's bug must not end the stream, nor reach the execution
                log.exception("the live-output callback failed")
