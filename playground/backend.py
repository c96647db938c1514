"""Where sandboxes come from: an Azure dynamic-sessions pool, or the embedded local emulator when none is configured."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from azure_sessions.endpoint import pool_name_from_endpoint
from playground.settings import IMAGE_MAX_BYTES, Settings

if TYPE_CHECKING:
    from azure_sessions import AzureDynamicSessionsExecutor
    from azure_sessions.emulator import Limits, Tier

log = logging.getLogger(__name__)

MIN_SESSION_MEMORY_MB = 512  # however small the machine: below this the sandbox's own Python and IPython struggle
UNISOLATED_WARNING = (
    "Not isolated: code written by the model runs as your user on this machine "
    "(no isolation tier works here). Configure an Azure pool for real isolation."
)


class SandboxRefused(RuntimeError):
    """This deployment runs no code: no isolation tier works and strangers can reach the page."""


@dataclass
class Backend:
    """The sandbox service every browser session's executor talks to, plus what the page says about it."""

    kind: str  # "azure" | "local" | "refused" (no code is run; `refusal` says why)
    endpoint: str
    api_version: str | None  # None: the library's default
    # handed to every client: one DefaultCredential (Azure) or the emulator's token (a secret: never in repr)
    credential: Any = field(repr=False)
    isolated: bool
    warning: str | None = None
    emulator: Any = None  # the EmulatorHandle this backend owns (stopped by `stop`), if any
    tier: Tier | None = None  # local only: the emulator's sandbox tier (its label and description)
    refusal: str | None = None

    @property
    def pool_name(self) -> str:
        return pool_name_from_endpoint(self.endpoint)

    @property
    def badge(self) -> str:
        if self.kind == "azure":
            return f"Azure pool · {self.pool_name}"
        if self.kind == "refused":
            return "No sandbox · code is not run"
        return f"Local sandbox · {self.tier.label if self.tier else 'unknown'}"

    @property
    def description(self) -> str:
        if self.kind == "azure":
            return f"Azure dynamic sessions pool {self.pool_name}"
        if self.kind == "refused":
            return "None: no isolation tier works on this host"
        return f"Local emulator, {self.tier.description if self.tier else 'unknown sandbox'}"

    @property
    def effective_api_version(self) -> str:
        if self.api_version:
            return self.api_version
        from azure_sessions import DEFAULT_API_VERSION

        return DEFAULT_API_VERSION

    def new_executor(self, session_id: str, execution_timeout: float) -> AzureDynamicSessionsExecutor:
        """An executor bound to one sandbox session, with a server-generated identifier."""
        if self.refusal:
            raise SandboxRefused(self.refusal)
        from smolagents.monitoring import AgentLogger, LogLevel

        from azure_sessions import AzureDynamicSessionsExecutor

        kwargs: dict[str, Any] = {"session_id": session_id, "credential": self.credential}
        if self.api_version:
            kwargs["api_version"] = self.api_version
        return AzureDynamicSessionsExecutor(
            pool_management_endpoint=self.endpoint,
            execution_timeout=execution_timeout,
            logger=AgentLogger(level=LogLevel.OFF),
            **kwargs,
        )

    def stop(self) -> None:
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None

    @classmethod
    def for_emulator(cls, emulator: Any, token: str | None = None, api_version: str | None = None) -> Backend:
        """Use an already running emulator (tests pass the shared fixture; it is not stopped by `stop`)."""
        warning = None
        if not emulator.isolated:
            warning = getattr(emulator, "isolation_warning", None) or UNISOLATED_WARNING
        return cls(
            kind="local",
            endpoint=emulator.endpoint,
            api_version=api_version,
            credential=token or emulator.token or "local-emulator",
            isolated=bool(emulator.isolated),
            warning=warning,
            tier=emulator.tier,
        )

    @classmethod
    def refused(cls, reason: str, api_version: str | None = None) -> Backend:
        """No sandbox at all: the page says ``reason`` and runs nothing."""
        return cls("refused", "", api_version, None, isolated=False, warning=reason, refusal=reason)


def local_sandbox_limits(settings: Settings, machine_memory_mb: int | None = None) -> Limits:
    """What each session of the embedded emulator may hold. Its memory budget is ``session_memory_mb`` when set, else
    sized so that one visitor's sandboxes (``sandboxes_per_visitor``) hold at most half of the machine's memory
    (``machine_memory_mb``, read from /proc/meminfo and the container's limit when not given), and never more than
    the emulator's default; an image larger than the chat shows is not returned at all (the sandbox says so instead
    of handing the server tens of MB)."""
    from azure_sessions.emulator import Limits

    memory = settings.session_memory_mb
    total = machine_memory_mb if machine_memory_mb is not None else _machine_memory_mb()
    if memory is None and total:
        share = total // (2 * max(1, settings.sandboxes_per_visitor))
        memory = max(MIN_SESSION_MEMORY_MB, min(Limits.session_memory_mb or share, share))
    return Limits(session_memory_mb=memory or Limits.session_memory_mb, image_mb=IMAGE_MAX_BYTES >> 20)


def _machine_memory_mb() -> int | None:
    """The memory this process's machine has: /proc/meminfo's total, or its container's limit (cgroup v2 or v1)
    where that is lower (a container sees its host's total)."""
    found = []
    try:
        with open("/proc/meminfo") as fh:
            found.append(next(int(line.split()[1]) // 1024 for line in fh if line.startswith("MemTotal:")))
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(limit) as fh:
                found.append(int(fh.read().strip()) >> 20)  # "max" (no limit) is not a number
        except (OSError, ValueError):
            continue
    return min(found) if found else None


def start_backend(settings: Settings) -> Backend:
    """The configured Azure pool, or a freshly started embedded emulator on a random loopback port."""
    if settings.pool_endpoint:
        from azure_sessions.auth import DefaultCredential

        # One credential object for every session's client: the library gives clients of the same credential one
        # token cache, and the credential chain (managed identity, service principal variables, az login…) is built
        # on the first request.
        return Backend(
            kind="azure",
            endpoint=settings.pool_endpoint,
            api_version=settings.api_version,
            credential=DefaultCredential(),
            isolated=True,
        )
    from azure_sessions.emulator import SandboxUnavailable, start_emulator

    token = secrets.token_urlsafe(24)  # only this process knows it: other local users cannot drive the emulator
    try:
        emulator = start_emulator(
            host="127.0.0.1",
            port=0,
            token=token,
            sandbox=settings.sandbox,
            prestart=settings.warm_sandboxes,
            # above the app's own cap: the app refuses with a sentence before the pool refuses with an error
            max_sessions=settings.max_sandboxes + settings.pool_headroom,
            refuse_unisolated=settings.public,  # a Space or a public bind: never unisolated, unless asked by name
            limits=local_sandbox_limits(settings),
        )
    except SandboxUnavailable as exc:
        log.error("the local sandbox will run no code: %s", exc)
        return Backend.refused(str(exc), settings.api_version)
    backend = Backend.for_emulator(emulator, token, settings.api_version)
    backend.emulator = emulator
    log.info("local emulator started (%s)", emulator.tier.name)
    return backend
