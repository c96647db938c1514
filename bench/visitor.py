"""A simulated visitor: what a browser tab does to the app over Gradio's own HTTP/SSE protocol, without a browser.

It reads the page's event wiring from ``/config`` (so it follows the layout, whatever it is), keeps the values of the
page's components as a tab would (their defaults, then what non-streaming events return), opens the heartbeat stream
a tab keeps open (closing it is closing the tab), runs the page's ``load`` events, and triggers events by the
``elem_id`` of the component and the event's name: queued ones through ``queue/join`` and the session's
``queue/data`` event stream, the others through ``run/predict``; then, as the page does, the events chained after it
(``.then``), skipping those that only run a script in the browser. Private events are what the page itself calls
this way; Gradio's client libraries refuse them. ``headers`` go with every request (a test may say, as a Space's
proxy would, which address a visitor comes from); ``upload`` sends files as the page's own upload requests do.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from gradio_client.utils import apply_diff

TIMEOUT = 120.0


@dataclass
class EventRun:
    """One triggered event: when it was sent, first streamed and completed (perf_counter seconds), and its stream."""

    sent: float
    first_update: float | None = None
    completed: float | None = None
    success: bool = False
    stream: list[str] = field(default_factory=list)
    error: str = ""

    def text(self) -> str:
        return "\n".join(self.stream)


class Visitor:
    def __init__(
        self, url: str, config: dict[str, Any], headers: dict[str, str] | None = None, session_hash: str | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.api = self.url + config.get("api_prefix", "/gradio_api")
        self.headers = dict(headers or {})  # sent with every request (e.g. the client address a proxy reports)
        self.http = requests.Session()
        self.http.trust_env = False  # loopback only
        self.headers = dict(headers or {})
        self.http.headers.update(self.headers)
        self.session_hash = session_hash or secrets.token_hex(6)
        self.components = {c["id"]: c for c in config["components"]}
        self.values: dict[int, Any] = {cid: c.get("props", {}).get("value") for cid, c in self.components.items()}
        self.events = config["dependencies"]
        self._heartbeat: http.client.HTTPConnection | None = None

    # -- a tab's life ------------------------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the tab: the heartbeat stream, then the page's load events."""
        parts = urlsplit(self.api)
        self._heartbeat = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)
        self._heartbeat.request("GET", f"{parts.path}/heartbeat/{self.session_hash}", headers=self.headers)
        threading.Thread(target=self._drain_heartbeat, args=(self._heartbeat.getresponse(),), daemon=True).start()
        for event in self.events:
            if any(target[1] == "load" for target in event["targets"]):
                self._chain(event, None)

    def close(self) -> None:
        """Close the tab: the server sees the heartbeat end and runs the page's unload events."""
        if self._heartbeat is not None and self._heartbeat.sock is not None:
            with contextlib.suppress(OSError):
                self._heartbeat.sock.shutdown(socket.SHUT_RDWR)
            self._heartbeat.close()
        self.http.close()

    def trigger(
        self, elem_id: str, event_name: str, event_data: dict | None = None, **values_by_elem_id: Any
    ) -> EventRun:
        """Trigger ``event_name`` of the component ``elem_id`` (and what the page chains after it), its inputs'
        values overridden by elem_id. The run's times and stream cover the whole chain."""
        for elem, value in values_by_elem_id.items():
            self.values[self._component(elem)] = value
        target = self._component(elem_id)
        event = next(e for e in self.events if [target, event_name] in [list(t) for t in e["targets"]])
        return self._chain(event, target, event_data)

    @property
    def browser_key(self) -> Any:
        """What the page keeps in the browser's storage (its gr.BrowserState): set it before `open` to come back as
        the same browser (a reload, another tab)."""
        return next((self.values[cid] for cid, c in self.components.items() if c.get("type") == "browserstate"), None)

    @browser_key.setter
    def browser_key(self, value: Any) -> None:
        for cid, component in self.components.items():
            if component.get("type") == "browserstate":
                self.values[cid] = value

    def value(self, elem_id: str) -> Any:
        """What the page holds for the component ``elem_id`` now."""
        return self.values.get(self._component(elem_id))

    def upload(self, files: list[tuple[str, bytes]], ticket_from: str = "ticket-value") -> requests.Response:
        """Upload files to Gradio's upload route as the page does (with the page's upload ticket, when it has one)."""
        ticket = self.value(ticket_from) if any(
            c.get("props", {}).get("elem_id") == ticket_from for c in self.components.values()
        ) else None  # fmt: skip
        headers = {"x-playground-ticket": ticket} if ticket else {}
        body = [("files", (name, data)) for name, data in files]
        return self.http.post(f"{self.api}/upload", files=body, headers=headers, timeout=TIMEOUT)

    def _chain(self, event: dict[str, Any], trigger_id: int | None, event_data: dict | None = None) -> EventRun:
        """Run `event`, then each event the page chains after it (those with a server function), as one run."""
        first = run = self._run(event, trigger_id, event_data)
        while True:
            after = next((e for e in self.events if e.get("trigger_after") == event["id"]), None)
            if after is None or (after.get("trigger_only_on_success") and not run.success):
                return first
            event = after
            if not after.get("backend_fn", True):
                continue
            run = self._run(after, None)
            first.stream.extend(run.stream)
            first.first_update = first.first_update or run.first_update
            first.completed, first.success = run.completed, first.success and run.success
            first.error = first.error or run.error

    def choice(self, elem_id: str, label: str) -> Any:
        """The value of the option a person would pick by its label in a dropdown (choices are label, value pairs)."""
        choices = self.components[self._component(elem_id)]["props"]["choices"]
        return next(value for shown, value in choices if shown == label)

    # -- protocol --------------------------------------------------------------------------------------------------------
    def _component(self, elem_id: str) -> int:
        return next(cid for cid, c in self.components.items() if c.get("props", {}).get("elem_id") == elem_id)

    def _run(self, event: dict[str, Any], trigger_id: int | None, event_data: dict | None = None) -> EventRun:
        body = {"data": [self.values.get(i) for i in event["inputs"]], "fn_index": event["id"],
                "event_data": event_data, "session_hash": self.session_hash, "trigger_id": trigger_id}  # fmt: skip
        run = EventRun(sent=time.perf_counter())
        if event.get("queue") is False:
            reply = self.http.post(f"{self.api}/run/predict", json=body, timeout=TIMEOUT)
            run.completed, run.success = time.perf_counter(), reply.ok
            if reply.ok:
                self._keep(event, reply.json().get("data"))
            else:
                run.error = reply.text
            return run
        joined = self.http.post(f"{self.api}/queue/join", json=body, timeout=TIMEOUT)
        joined.raise_for_status()
        event_id = joined.json()["event_id"]
        streamed: list[Any] | None = None  # a generator's latest update, rebuilt whole from the streamed diffs
        with self.http.get(f"{self.api}/queue/data", params={"session_hash": self.session_hash}, stream=True,
                           timeout=TIMEOUT) as stream:  # fmt: skip
            for line in stream.iter_lines(decode_unicode=True):
                if not line or not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("event_id") != event_id:
                    continue
                run.stream.append(line)
                if message.get("msg") == "process_generating":
                    run.first_update = run.first_update or time.perf_counter()
                    streamed = self._streamed(event, streamed, (message.get("output") or {}).get("data"))
                if message.get("msg") == "process_completed":
                    run.completed, run.success = time.perf_counter(), bool(message.get("success"))
                    output = message.get("output") or {}
                    if run.success and not output.get("is_generating"):
                        self._keep(event, output.get("data"))
                    elif not run.success:
                        run.error = str(output.get("error") or message.get("title") or "")
                    break
        return run

    def _streamed(self, event: dict[str, Any], previous: list[Any] | None, data: list[Any] | None) -> list[Any] | None:
        """A generator's next update: the first one whole, each later one a diff of the one before (as Gradio's
        client rebuilds them); its values are kept as the page would show them."""
        if data is None:
            return previous
        if previous is not None:
            data = [apply_diff(previous[i] if i < len(previous) else None, diff) for i, diff in enumerate(data)]
        self._fold(event, data)
        return data

    def _keep(self, event: dict[str, Any], data: list[Any] | None) -> None:
        """Remember what an event returned for its outputs, as the page would (full values, not stream diffs)."""
        if event.get("types", {}).get("generator") or not data:
            return
        self._fold(event, data)

    def _fold(self, event: dict[str, Any], data: list[Any]) -> None:
        """The event's output values into the page's (an update without a value leaves its component as it was)."""
        for component, value in zip(event["outputs"], data, strict=False):
            if isinstance(value, dict) and value.get("__type__") == "update":
                if "value" not in value:
                    continue
                value = value["value"]
            self.values[component] = value

    @staticmethod
    def _drain_heartbeat(response: http.client.HTTPResponse) -> None:
        # AttributeError: http.client's read races with `close` from the tab's thread
        with contextlib.suppress(OSError, ValueError, AttributeError, http.client.HTTPException):
            while response.readline():
                pass  # until the tab closes it
