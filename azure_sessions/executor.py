"""AzureDynamicSessionsExecutor: a smolagents ``RemotePythonExecutor`` running code in a dynamic-sessions pool.

Final answers are detected structurally. The remote ``final_answer`` tool stores its serialized value in a kernel
global whose name carries a per-executor random nonce, prints it to stdout between two nonce markers, then raises
``FinalAnswerException``. A complete frame in stdout is the final answer, whatever else was printed or raised
afterwards. When the frame is cut off (the service truncates long output) but the answer was given, one follow-up
execution fetches the stored global.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import os
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, overload

from ._extras import missing_extra

try:
    from smolagents.local_python_executor import CodeOutput
    from smolagents.monitoring import AgentLogger, LogLevel
    from smolagents.remote_executors import RemotePythonExecutor
    from smolagents.serialization import SafeSerializer
    from smolagents.tools import Tool, get_tools_definition_code
    from smolagents.utils import AgentError, get_source
except ModuleNotFoundError as exc:  # installed without the extra
    raise (missing_extra("smolagents", "AzureDynamicSessionsExecutor", ["smolagents"]) or exc) from exc

from .client import SessionsClient
from .dialects import DEFAULT_API_VERSION
from .errors import SessionsError
from .models import SESSION_LOST_NOTICE, ExecutionError, ExecutionReport, ExecutionResult, FileInfo

log = logging.getLogger(__name__)

POOL_ENDPOINT_ENV = "AZURE_SESSIONS_POOL_ENDPOINT"
TOOLS_FRESH_SECONDS = 120.0
"""Unchanged tools are not re-sent when the session was used this recently (cooldown is at least 300 s)."""
_FOLLOW_UP_TIMEOUT = 30.0
_INLINE_ANSWER_CHARS = 3000
"""Stored answers up to this length come back as the follow-up's result; longer ones through a file."""
_PACKAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?([<>=!~]=?[A-Za-z0-9.*+!_-]+)?$")

_FORWARD_TEMPLATE = """
def forward(self, *args, **kwargs):
    try:
        return self._azs_serializing_forward(*args, **kwargs)
    except BaseException as _azs_exc:
        if type(_azs_exc).__name__ != "FinalAnswerException":
            raise
        globals()[{global_name!r}] = _azs_exc.value
        import sys as _azs_sys
        _azs_sys.stdout.write("\\n" + {start!r} + _azs_exc.value + {end!r} + "\\n")
        _azs_sys.stdout.flush()
        raise
"""

_FETCH_TEMPLATE = """
def _azs_fetch_final_answer():
    value = globals().pop({global_name!r}, None)
    if isinstance(value, str) and len(value) > {limit}:
        with open({path!r}, "w", encoding="utf-8") as fh:
            fh.write(value)
        return "file:%d" % len(value)
    return value
_azs_fetch_final_answer()
"""


class CodeExecutionError(AgentError):
    """The agent's code raised an exception in the session: the :class:`AgentError` the model reads (its text is the
    output and the traceback), carrying the structured :attr:`error` for the other readers.

    smolagents' ``CodeAgent`` re-raises whatever an executor raises as an ``AgentExecutionError`` made from its text;
    :func:`execution_error_of` finds this one (and its :attr:`error`) behind it."""

    def __init__(self, message: str, logger: AgentLogger, result: ExecutionResult, error: ExecutionError) -> None:
        super().__init__(message, logger)
        self.result = result
        self.error = error

    @property
    def interrupted(self) -> bool:
        """The code was ended by an interrupt (Stop, or its timeout), not by an exception of its own."""
        return self.error.interrupted


def _chain(exc: BaseException | None) -> Iterable[BaseException]:
    """``exc`` and the exceptions behind it (``raise ... from``, or raised while handling), each once."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def execution_error_of(exc: BaseException | None) -> ExecutionError | None:
    """The :class:`~azure_sessions.ExecutionError` behind an agent's error, e.g. a step's ``AgentExecutionError``
    (None when the error did not come from code that raised in the session)."""
    found = next((e for e in _chain(exc) if isinstance(e, CodeExecutionError)), None)
    return found.error if found is not None else None


def sessions_error_of(exc: BaseException | None) -> SessionsError | None:
    """The :class:`~azure_sessions.errors.SessionsError` behind an agent's error (a full pool, an unreachable
    service...), or None: smolagents turns what the executor raises into an ``AgentExecutionError``."""
    return next((e for e in _chain(exc) if isinstance(e, SessionsError)), None)


def _add(listeners: list[Any], listener: Any) -> Callable[[], None]:
    """Add ``listener``; returns a function that removes it."""
    listeners.append(listener)

    def remove() -> None:
        with contextlib.suppress(ValueError):
            listeners.remove(listener)

    return remove


@dataclass(frozen=True, slots=True)
class _AnswerFrame:
    """The names the remote ``final_answer`` uses, unique to one executor by a random nonce: the kernel global
    that keeps the serialized answer, and the markers that frame it in stdout."""

    nonce: str = field(default_factory=lambda: secrets.token_hex(8))

    @property
    def global_name(self) -> str:
        return f"_azs_final_answer_{self.nonce}"

    @property
    def start(self) -> str:
        return f"<<azs-final-answer:{self.nonce}>>"

    @property
    def end(self) -> str:
        return f"<</azs-final-answer:{self.nonce}>>"

    def hider(self) -> _FrameHider:
        """A filter that hides this frame from stdout arriving in pieces (the live output of one execution), with the
        line breaks the remote ``final_answer`` writes around it (as :meth:`split` drops them)."""
        return _FrameHider("\n" + self.start, self.end + "\n")

    def split(self, stdout: str) -> tuple[str, str | None, str] | None:
        """``(printed before, encoded answer, printed after)`` around the frame in ``stdout``, None without one.

        The answer is None when the frame was cut off (the service truncates long output); nothing comes after.
        """
        start = stdout.find(self.start)
        if start == -1:
            return None
        before = stdout[:start].removesuffix("\n")
        end = stdout.find(self.end, start)
        if end == -1:
            return before, None, ""
        return before, stdout[start + len(self.start) : end], stdout[end + len(self.end) :].removeprefix("\n")


class _FrameHider:
    """Hides the final-answer frame (``start`` ... ``end``) from text that arrives in pieces, a marker possibly split
    across them: text that may be the start of a marker is held back until the next piece says whether it is."""

    def __init__(self, start: str, end: str) -> None:
        self._start, self._end = start, end
        self._held = ""
        self._inside = False

    def feed(self, text: str) -> str:
        """What of ``text`` (after what was held back) can be shown now."""
        text, self._held = self._held + text, ""
        shown = []
        while text:
            if self._inside:
                end = text.find(self._end)
                if end == -1:
                    self._held = text[-(len(self._end) - 1) :]  # a marker split here is found with the next piece
                    break
                text, self._inside = text[end + len(self._end) :], False
                continue
            start = text.find(self._start)
            if start != -1:
                shown.append(text[:start])
                text, self._inside = text[start + len(self._start) :], True
                continue
            keep = _partial_suffix(text, self._start)
            shown.append(text[: len(text) - keep])
            self._held = text[len(text) - keep :]
            break
        return "".join(shown)

    def rest(self, stdout: str) -> str:
        """What was held back at the end, now that the whole ``stdout`` is known: shown unless it began a frame."""
        held, self._held = self._held, ""
        return "" if self._inside or self._start in stdout else held


def _partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of ``text`` that begins ``marker`` (0 when none does)."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


def _one_credential(credential: Any, access_token_provider: Callable[[], str] | None) -> Any:
    """The credential the keywords give: ``access_token_provider`` is another name for a callable credential."""
    if access_token_provider is None:
        return credential
    if credential is not None:
        raise ValueError("give credential= or access_token_provider=, not both")
    if not callable(access_token_provider):
        raise TypeError("access_token_provider must be a zero-argument callable returning a token string")
    return access_token_provider


def _new_client(
    endpoint: str | None,
    session_id: str | None,
    credential: Any,
    api_version: str,
    managed_identity_client_id: str | None,
) -> SessionsClient:
    """A client for the executor's arguments; the endpoint defaults to env ``AZURE_SESSIONS_POOL_ENDPOINT``."""
    endpoint = endpoint or os.environ.get(POOL_ENDPOINT_ENV)
    if not endpoint:
        raise ValueError(
            f"give pool_management_endpoint= (or set {POOL_ENDPOINT_ENV}) to the session pool's management "
            "endpoint, e.g. https://<region>.dynamicsessions.io/subscriptions/.../sessionPools/<pool>"
        )
    return SessionsClient(
        endpoint,
        session_id or str(uuid.uuid4()),
        credential,
        api_version=api_version,
        managed_identity_client_id=managed_identity_client_id,
    )


class AzureDynamicSessionsExecutor(RemotePythonExecutor):
    """Runs a ``CodeAgent``'s code in an Azure Container Apps dynamic session (or the local emulator).

    The constructor takes smolagents' executor arguments first, as ``CodeAgent`` passes them to its remote executors,
    then keywords; it accepts every argument of the ``smolagents.azure_executors.AzureDynamicSessionsExecutor`` once
    proposed to smolagents, with the same meaning, so code written for that one runs unchanged.

    :param additional_imports: packages to pip-install, only when ``allow_package_install`` is True.
    :param logger: a smolagents ``AgentLogger`` (default: a new one at INFO level).
    :param allow_pickle: accept pickled final answers (only for a trusted sandbox). Default False.
    :keyword pool_management_endpoint: the pool endpoint (default: env ``AZURE_SESSIONS_POOL_ENDPOINT``).
    :keyword session_id: session identifier (default: a random UUID4; treat it as a secret).
    :keyword credential: see :class:`~azure_sessions.SessionsClient` (default ``DefaultAzureCredential``).
    :keyword access_token_provider: a zero-argument callable returning a bearer token, instead of ``credential``;
        it is called again when its token nears expiry and after a 401.
    :keyword managed_identity_client_id: user-assigned managed identity for the default credential (default: env
        ``AZURE_SESSIONS_MANAGED_IDENTITY_CLIENT_ID``); ignored when a credential or token provider is given.
    :keyword api_version: default ``2024-10-02-preview``.
    :keyword client: an existing :class:`SessionsClient` to use instead (the executor closes it in ``cleanup``).
    :keyword allow_package_install: allow ``pip install`` in the session (pools usually have no egress).
    :keyword execution_timeout: seconds allowed per code execution (the service caps it at 220).
    """

    def __init__(
        self,
        additional_imports: Iterable[str] = (),
        logger: AgentLogger | None = None,
        allow_pickle: bool = False,
        *,
        pool_management_endpoint: str | None = None,
        session_id: str | None = None,
        credential: Any = None,
        access_token_provider: Callable[[], str] | None = None,
        managed_identity_client_id: str | None = None,
        api_version: str = DEFAULT_API_VERSION,
        client: SessionsClient | None = None,
        allow_package_install: bool = False,
        execution_timeout: float = 120.0,
    ) -> None:
        if isinstance(additional_imports, str):
            raise TypeError(
                "the first argument is additional_imports, a list of package names; give the pool endpoint as "
                "pool_management_endpoint="
            )
        credential = _one_credential(credential, access_token_provider)
        if client is None:
            client = _new_client(
                pool_management_endpoint, session_id, credential, api_version, managed_identity_client_id
            )
        elif session_id is not None and session_id != client.identifier:
            raise ValueError("session_id differs from the injected client's identifier")
        super().__init__(list(additional_imports), logger or AgentLogger(level=LogLevel.INFO), allow_pickle)
        self.client = client
        self.session_id = client.identifier
        self.allow_package_install = allow_package_install
        self.execution_timeout = execution_timeout
        self.last_result: ExecutionResult | None = None
        self.session_resets = 0
        self._listeners: list[Callable[[ExecutionReport], None]] = []
        self._output_listeners: list[Callable[[str, str], None]] = []
        self._answer = _AnswerFrame()
        self._last_guid: str | None = None
        self._last_call = float("-inf")
        self._notice_pending = False
        self._pending_setup: dict[str, str] = {}
        self._setup: dict[str, str] = {}  # what a recycled session needs again: "variables", "tools"
        self._tools_sent: tuple[str | None, int] | None = None
        self._tools_code_cache: tuple[list[tuple[str, Tool, type]], str] = ([], "")
        if self.additional_imports and allow_package_install:
            self.installed_packages = self.install_packages(self.additional_imports)

    def __repr__(self) -> str:
        return f"AzureDynamicSessionsExecutor(client={self.client!r})"

    # ------------------------------------------------------------------ smolagents hooks

    def run_code_raise_errors(self, code: str) -> CodeOutput:
        """Run the agent's code: output, logs and ``is_final_answer``.

        :raises CodeExecutionError: the code raised (an :class:`AgentError` whose ``error`` says what).
        :raises SessionsError: the service failed, e.g. :class:`~azure_sessions.errors.PoolFullError`.
        """
        self._flush_setup()
        result, lost = self._execute(code, live=True)
        self.last_result = result
        if lost:
            self._replay_setup()
        lost_before = self._take_notice()
        notice = SESSION_LOST_NOTICE + "\n" if lost_before else ""
        try:
            output = self._to_code_output(result, notice)
        except AgentError:
            self._report(code, result, lost_before, final_answer=False)
            raise
        self._report(code, result, lost_before, final_answer=output.is_final_answer)
        return output

    def add_listener(self, listener: Callable[[ExecutionReport], None]) -> Callable[[], None]:
        """Call ``listener`` with an :class:`~azure_sessions.ExecutionReport` after each execution of agent code
        (its output, images, traceback, and whether the session had been lost), in the executing thread.
        Returns a function that removes the listener."""
        return _add(self._listeners, listener)

    def add_output_listener(self, listener: Callable[[str, str], None]) -> Callable[[], None]:
        """Call ``listener(stream, text)`` with what agent code writes to ``"stdout"`` and ``"stderr"`` while it
        runs, where the backend can stream it (:attr:`supports_live_output`; never on an Azure pool: the output
        comes with the execution's end, to :meth:`add_listener`'s listeners). The final-answer frame never shows.
        Called from the client's live-output thread, and once more from the executing thread as the execution
        returns, never two at a time and never after it returned; it previews what the execution's report holds.
        Returns a function that removes the listener."""
        return _add(self._output_listeners, listener)

    @property
    def supports_live_output(self) -> bool | None:
        """Whether output listeners hear output as it is written (see
        :attr:`~azure_sessions.SessionsClient.supports_live_output`): False on Azure pools, None while unknown."""
        return self.client.supports_live_output

    def _live_output(self) -> tuple[Callable[[str, str], None] | None, Callable[[ExecutionResult], None]]:
        """The client's ``on_output`` for one execution of agent code (None without listeners), and what to call
        with its result: the agent's final-answer frame is hidden, even split across pieces."""
        if not self._output_listeners:
            return None, lambda result: None
        hider = self._answer.hider()

        def tell(stream: str, text: str) -> None:
            for listener in list(self._output_listeners):
                try:
                    listener(stream, text)
                except Exception:  # a listener's bug must not turn into the agent's error
                    log.exception("output listener failed")

        def on_output(stream: str, text: str) -> None:
            shown = hider.feed(text) if stream == "stdout" else text
            if shown:
                tell(stream, shown)

        def finish(result: ExecutionResult) -> None:
            rest = hider.rest(result.stdout)
            if rest:
                tell("stdout", rest)

        return on_output, finish

    def _report(self, code: str, result: ExecutionResult, session_lost: bool, *, final_answer: bool) -> None:
        if not self._listeners:
            return
        stdout = result.stdout
        framed = self._answer.split(stdout)
        if framed is not None:
            before, _, after = framed
            stdout = before + ("\n" + after if after else "")
        report = ExecutionReport(code, result, stdout, session_lost, final_answer)
        for listener in list(self._listeners):
            try:
                listener(report)
            except Exception:  # a listener's bug must not turn into the agent's error
                log.exception("execution listener failed")

    def interrupt(self) -> bool:
        """Interrupt the running execution where the service supports it (see
        :meth:`~azure_sessions.SessionsClient.interrupt`): True when one was interrupted, False when none was running.

        :raises InterruptNotSupportedError: an Azure pool, which cannot interrupt; :meth:`cleanup` ends the code by
            deleting the session.
        """
        return self.client.interrupt()

    def send_tools(self, tools: dict[str, Tool]) -> None:
        """Define the tools in the session (skipped when unchanged and the session was used recently)."""
        if "final_answer" in tools:
            self._patch_final_answer_with_exception(tools["final_answer"])
        if self.allow_package_install:
            wanted = {pkg for tool in tools.values() for pkg in tool.to_dict()["requirements"]}
            wanted = {"pillow" if p == "PIL" else p for p in wanted} - {"smolagents", *self.installed_packages}
            if wanted:
                self.installed_packages += self.install_packages(sorted(wanted))
        code = self._tools_definition_code(tools)
        self._setup.pop("tools", None)
        if code:
            self._setup["tools"] = code
            fresh = time.monotonic() - self._last_call < TOOLS_FRESH_SECONDS
            if not (fresh and self._tools_sent == (self._last_guid, hash(code))):
                self._pending_setup["tools"] = code
        self._flush_setup()

    def _tools_definition_code(self, tools: dict[str, Tool]) -> str:
        """smolagents' tool source, rebuilt only when the tool objects change (it inspects and parses sources)."""
        if not tools:
            return ""
        key = [(name, tool, type(tool)) for name, tool in sorted(tools.items())]
        cached_key, cached_code = self._tools_code_cache
        same = len(key) == len(cached_key) and all(
            a[0] == b[0] and a[1] is b[1] and a[2] is b[2] for a, b in zip(key, cached_key, strict=True)
        )
        if not same:
            cached_code = get_tools_definition_code(tools)
            self._tools_code_cache = (key, cached_code)
        return cached_code

    def send_variables(self, variables: dict[str, Any]) -> None:
        """Queue the variables; they are sent with the tools (or before the next code) in one execution."""
        if not variables:
            return
        serialized = SafeSerializer.dumps(variables, allow_pickle=self.allow_pickle)
        code = (
            f"{SafeSerializer.get_deserializer_code(self.allow_pickle)}\n"
            f"vars_dict = _deserialize({serialized!r})\nlocals().update(vars_dict)\n"
        )
        self._setup["variables"] = self._pending_setup["variables"] = code

    def install_packages(self, additional_imports: list[str]) -> list[str]:
        """``pip install`` named packages in the session, only when ``allow_package_install`` is True.

        Wildcards and anything that is not a plain requirement specifier are skipped, never passed to pip.
        """
        if not self.allow_package_install:
            if additional_imports:
                self.logger.log(
                    "Package installation is disabled (allow_package_install=False); using the pool's packages.",
                    level=LogLevel.DEBUG,
                )
            return []
        packages = [p for p in additional_imports if p != "*" and _PACKAGE_RE.match(p)]
        if not packages:
            return []
        code = (
            "import subprocess as _azs_sp, sys as _azs_sys\n"
            f"_azs_r = _azs_sp.run([_azs_sys.executable, '-m', 'pip', 'install', '--quiet', *{packages!r}], "
            "capture_output=True, text=True)\n"
            "print(_azs_r.stdout[-2000:], _azs_r.stderr[-2000:])\n"
        )
        output = self.run_code_raise_errors(code)
        self.logger.log(output.logs, level=LogLevel.DEBUG)
        return packages

    def _patch_final_answer_with_exception(self, final_answer_tool: Any) -> None:
        """smolagents' patch, plus a forward that stores and frames the serialized answer (see module doc)."""
        cls = type(final_answer_tool)
        if not cls.__dict__.get("__azs_patched__"):
            super()._patch_final_answer_with_exception(final_answer_tool)
            cls = type(final_answer_tool)
            serializing = cls.forward
            serializing.__source__ = get_source(serializing).replace(
                "def forward(", "def _azs_serializing_forward(", 1
            )
            cls._azs_serializing_forward = serializing
            cls.__azs_patched__ = True
        if cls.__dict__.get("__azs_nonce__") != self._answer.nonce:
            answer = self._answer
            source = _FORWARD_TEMPLATE.format(
                global_name=answer.global_name, start=answer.start, end=answer.end
            ).strip()
            namespace: dict[str, Any] = {}
            exec(compile(source, "<azure_sessions final_answer>", "exec"), namespace)  # our own fixed template
            forward = namespace["forward"]
            forward.__source__ = source
            cls.forward = forward
            cls.__azs_nonce__ = self._answer.nonce

    # ------------------------------------------------------------------ files and lifecycle

    def upload_file(self, source: str | os.PathLike[str] | BinaryIO, name: str | None = None) -> FileInfo:
        """Upload a file to the session's ``/mnt/data`` (streamed)."""
        return self.client.upload(source, name)

    @overload
    def download_file(self, name: str) -> bytes: ...
    @overload
    def download_file(self, name: str, dest: str | os.PathLike[str] | BinaryIO) -> int: ...
    def download_file(self, name: str, dest: str | os.PathLike[str] | BinaryIO | None = None) -> bytes | int:
        """A file from ``/mnt/data``: its bytes, or streamed to ``dest`` (a path or binary file; returns its size)."""
        if dest is None:
            return self.client.read_bytes(name)
        return self.client.download(name, dest)

    def list_files(self) -> list[FileInfo]:
        """The files in the session's ``/mnt/data``."""
        return self.client.list_files()

    def delete_file(self, name: str) -> None:
        """Delete a file from ``/mnt/data``."""
        self.client.delete_file(name)

    def cleanup(self) -> None:
        """Delete the session (best effort: an idle session expires anyway) and close the HTTP pool. A call still
        running in another thread (a step of an abandoned run) cannot bring the session back afterwards."""
        try:
            self.client.end()
        except SessionsError as exc:
            self.logger.log(f"Could not delete the session ({exc}); it will expire on its own.", level=LogLevel.INFO)

    # ------------------------------------------------------------------ internals

    def _execute(self, code: str, timeout: float | None = None, live: bool = False) -> tuple[ExecutionResult, bool]:
        """Run code (``live``: the agent's own, its output told to the output listeners as it comes); returns the
        result and whether the service's session guid changed (session recycled)."""
        on_output, finish = self._live_output() if live else (None, None)
        result = self.client.execute(code, timeout=timeout or self.execution_timeout, on_output=on_output)
        if finish is not None:
            finish(result)
        self._last_call = time.monotonic()
        guid = result.session_guid
        lost = False
        if guid:
            if self._last_guid is not None and guid != self._last_guid:
                lost = True
                self.session_resets += 1
                self._notice_pending = True
                self._tools_sent = None
            self._last_guid = guid
        return result, lost

    def _take_notice(self) -> bool:
        pending, self._notice_pending = self._notice_pending, False
        return pending

    def _flush_setup(self) -> None:
        if not self._pending_setup:
            return
        sends_tools = "tools" in self._pending_setup
        parts = [self._pending_setup[key] for key in ("variables", "tools") if key in self._pending_setup]
        self._pending_setup.clear()
        result, lost = self._execute("\n".join(parts))
        if result.error is not None:
            raise CodeExecutionError(
                f"Setting up the agent's tools and variables in the session failed:\n{result.stdout}{result.stderr}",
                self.logger,
                result,
                result.error,
            )
        if sends_tools:
            self._tools_sent = (self._last_guid, hash(self._setup["tools"]))
        if lost:
            self._replay_setup()

    def _replay_setup(self) -> None:
        """Define tools and variables again in a recycled session (best effort; the notice tells the model)."""
        parts = [self._setup[key] for key in ("variables", "tools") if key in self._setup]
        if not parts:
            return
        try:
            result, _ = self._execute("\n".join(parts))
        except SessionsError as exc:
            self.logger.log(f"Could not restore tools in the recycled session: {exc}", level=LogLevel.INFO)
            return
        if result.error is None and "tools" in self._setup:
            self._tools_sent = (self._last_guid, hash(self._setup["tools"]))

    def _to_code_output(self, result: ExecutionResult, notice: str) -> CodeOutput:
        stdout = result.stdout
        framed = self._answer.split(stdout)
        if framed is not None:
            before, encoded, after = framed
            if encoded is not None:
                return CodeOutput(self._decode_answer(encoded), notice + before + after, True)
            return CodeOutput(self._decode_answer(self._require_stored_answer()), notice + before, True)
        error = result.error
        # final_answer() ran but its frame is not in stdout (output cut before it): fetch the stored value. The
        # name appearing in the traceback is not enough: when final_answer itself fails (e.g. on a value it cannot
        # serialize), the traceback quotes the tool's source, which mentions FinalAnswerException.
        if (
            error is not None
            and self.FINAL_ANSWER_EXCEPTION in result.stderr
            and error.name in ("", self.FINAL_ANSWER_EXCEPTION)
        ):
            return CodeOutput(self._decode_answer(self._require_stored_answer()), notice + stdout, True)
        if error is not None:
            raise CodeExecutionError(
                f"{notice}{stdout}\nExecuting code yielded an error:\n{result.stderr or result.status}",
                self.logger,
                result,
                error,
            )
        output = result.result
        if output is None and result.images:
            output = result.images[0].to_pil()
        logs = f"{stdout}{result.stderr}" if result.stderr else stdout
        return CodeOutput(output, notice + logs, False)

    def _require_stored_answer(self) -> str:
        stored = self._fetch_stored_answer()
        if stored is None:
            raise AgentError(
                "final_answer() was called but its value was cut off from the output and could not be recovered "
                "from the session. Return a shorter answer (or save large results to a file in /mnt/data).",
                self.logger,
            )
        return stored

    def _fetch_stored_answer(self) -> str | None:
        """A follow-up execution returning (and deleting) the stored serialized final answer; None if none is.

        A short value comes back as the execution's result; a long one (which the service might truncate) is
        written to a hidden file in /mnt/data, downloaded without any size limit, and deleted.
        """
        path = f"/mnt/data/.azs-final-answer-{self._answer.nonce}.txt"
        code = _FETCH_TEMPLATE.format(global_name=self._answer.global_name, path=path, limit=_INLINE_ANSWER_CHARS)
        result, _ = self._execute(code, timeout=_FOLLOW_UP_TIMEOUT)
        value = result.result
        if isinstance(value, str) and value[:1] in ("'", '"'):
            with contextlib.suppress(ValueError, SyntaxError):
                value = ast.literal_eval(value)
        if isinstance(value, str) and value.startswith("file:"):
            try:
                value = self.client.read_bytes(path).decode("utf-8")
            finally:
                with contextlib.suppress(SessionsError):
                    self.client.delete_file(path)
        if isinstance(value, str) and value.startswith(("safe:", "pickle:")):
            return value
        return None

    def _decode_answer(self, encoded: str | None) -> Any:
        try:
            return self._deserialize_final_answer(encoded or "", self.allow_pickle)
        except Exception as exc:
            raise AgentError(
                f"The final answer could not be deserialized ({type(exc).__name__}: {exc}). Pass final_answer a "
                "JSON-friendly value (str, number, list, dict) or set allow_pickle=True for a trusted sandbox.",
                self.logger,
            ) from exc
