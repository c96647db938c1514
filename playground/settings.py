"""Environment -> one frozen Settings object. The only module of the playground that reads the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from azure_sessions.emulator import is_loopback
from azure_sessions.emulator.tiers import CHOICES as SANDBOX_CHOICES

DEFAULT_HF_MODEL_ID = "Qwen/Qwen2.5-Coder-32B-Instruct"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_AZURE_OPENAI_API_VERSION = "2024-10-21"
IMAGE_MAX_BYTES = 8 * 1024 * 1024
"""An image the code showed that is bigger is not kept (the chat says so); the local sandbox does not return it."""


class SettingsError(ValueError):
    """A configuration value is malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything the playground can be configured with. Secrets are kept out of `repr`."""

    # Sandbox backend
    pool_endpoint: str | None = None
    api_version: str | None = None  # None: the library's default
    sandbox: str = "auto"  # local emulator only: auto | bubblewrap | landlock | none
    warm_sandboxes: int = 4  # local emulator only: sandboxes kept started for the next new visitors
    execution_timeout: float = 120.0
    # Web server
    server_name: str = "127.0.0.1"
    server_port: int = 7860
    concurrency: int = 16  # messages running at once, in all
    # Per-user sessions
    max_steps: int = 12
    idle_timeout: float = 1800.0
    max_upload_bytes: int = 128 * 1024 * 1024
    max_message_chars: int = 100_000
    # Fair shares (per visitor: a signed-in user, else a client address; see playground/visitors.py)
    max_sandboxes: int = 48  # sandboxes held at once, in all: below the pool's own limit
    sandboxes_per_visitor: int = 4
    runs_per_visitor: int = 2  # messages of one visitor running at once; the next wait behind them
    new_sessions_per_minute: int = 20  # per client address
    new_sessions_per_minute_total: int = 300
    tab_grace: float = 120.0  # seconds a session keeps its sandbox once no tab of it is open
    session_memory_mb: int | None = None  # local sandbox only: a session's memory budget (None: sized to the machine)
    upload_quota_bytes: int = 512 * 1024 * 1024  # uploads waiting on the server per visitor session
    fair_shares: str = "auto"  # auto (per-visitor caps where strangers can reach the page) | on | off
    require_login: bool = False  # "Sign in with Hugging Face" before any code runs (a Space with OAuth)
    # Models
    default_model: str | None = None
    hf_token: str | None = field(default=None, repr=False)
    hf_model_id: str = DEFAULT_HF_MODEL_ID
    hf_provider: str | None = None
    openai_base_url: str | None = None
    openai_api_key: str | None = field(default=None, repr=False)
    openai_model: str = DEFAULT_OPENAI_MODEL
    azure_openai_endpoint: str | None = None
    azure_openai_api_key: str | None = field(default=None, repr=False)
    azure_openai_deployment: str | None = None
    azure_openai_api_version: str = DEFAULT_AZURE_OPENAI_API_VERSION
    local_gguf_path: str | None = None
    # Hugging Face Space (OAuth "Sign in with Hugging Face" is offered only when the Space enables it)
    space_id: str | None = None
    space_oauth: bool = False

    @property
    def uses_local_emulator(self) -> bool:
        return not self.pool_endpoint

    @property
    def public(self) -> bool:
        """Strangers may reach the page: it runs in a Hugging Face Space or listens beyond loopback."""
        return bool(self.space_id) or not is_loopback(self.server_name)

    @property
    def caps_per_visitor(self) -> bool:
        """Whether the per-visitor caps apply: where strangers can reach the page (on a loopback bind every request
        comes from this machine, one visitor), unless PLAYGROUND_FAIR_SHARES says otherwise."""
        return self.fair_shares == "on" or (self.fair_shares == "auto" and self.public)

    @property
    def trust_forwarded_for(self) -> bool:
        """A Space's proxy reports the client's address in X-Forwarded-For; anywhere else the header is the client's
        own word, and the socket's peer address is used."""
        return bool(self.space_id)

    @property
    def pool_headroom(self) -> int:
        """Sessions the embedded emulator allows above `max_sandboxes`: sandboxes being deleted still count there."""
        return max(8, self.max_sandboxes // 4)


def _text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _number(env: Mapping[str, str], name: str, default: float, cast: type, minimum: float) -> float:
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _optional_int(env: Mapping[str, str], name: str, minimum: int) -> int | None:
    return None if _text(env, name) is None else int(_number(env, name, 0, int, minimum))


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (_text(env, name) or "").lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = (_text(env, name) or default).lower()
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the configuration from `env` (default: the process environment)."""
    env = os.environ if env is None else env
    sandbox = _choice(env, "PLAYGROUND_SANDBOX", tuple(SANDBOX_CHOICES), "auto")
    return Settings(
        pool_endpoint=_text(env, "AZURE_SESSIONS_POOL_ENDPOINT"),
        api_version=_text(env, "AZURE_SESSIONS_API_VERSION"),
        sandbox=sandbox,
        warm_sandboxes=int(_number(env, "PLAYGROUND_WARM_SANDBOXES", 4, int, 0)),
        execution_timeout=_number(env, "PLAYGROUND_EXECUTION_TIMEOUT", 120.0, float, 1),
        server_name=_text(env, "GRADIO_SERVER_NAME") or "127.0.0.1",
        server_port=int(_number(env, "GRADIO_SERVER_PORT", 7860, int, 1)),
        concurrency=int(_number(env, "PLAYGROUND_CONCURRENCY", 16, int, 1)),
        max_steps=int(_number(env, "PLAYGROUND_MAX_STEPS", 12, int, 1)),
        idle_timeout=60.0 * _number(env, "PLAYGROUND_IDLE_MINUTES", 30.0, float, 1),
        max_upload_bytes=int(_number(env, "PLAYGROUND_MAX_UPLOAD_MB", 128.0, float, 0.001) * 1024 * 1024),
        max_message_chars=int(_number(env, "PLAYGROUND_MAX_MESSAGE_CHARS", 100_000, int, 100)),
        max_sandboxes=int(_number(env, "PLAYGROUND_MAX_SANDBOXES", 48, int, 1)),
        sandboxes_per_visitor=int(_number(env, "PLAYGROUND_SANDBOXES_PER_VISITOR", 4, int, 1)),
        runs_per_visitor=int(_number(env, "PLAYGROUND_RUNS_PER_VISITOR", 2, int, 1)),
        new_sessions_per_minute=int(_number(env, "PLAYGROUND_NEW_SESSIONS_PER_MINUTE", 20, int, 1)),
        new_sessions_per_minute_total=int(_number(env, "PLAYGROUND_NEW_SESSIONS_PER_MINUTE_TOTAL", 300, int, 1)),
        tab_grace=_number(env, "PLAYGROUND_TAB_GRACE_SECONDS", 120.0, float, 5),
        session_memory_mb=_optional_int(env, "PLAYGROUND_SESSION_MEMORY_MB", 128),
        upload_quota_bytes=int(_number(env, "PLAYGROUND_UPLOAD_QUOTA_MB", 512.0, float, 1) * 1024 * 1024),
        fair_shares=_choice(env, "PLAYGROUND_FAIR_SHARES", ("auto", "on", "off"), "auto"),
        require_login=_flag(env, "PLAYGROUND_REQUIRE_LOGIN"),
        default_model=_text(env, "PLAYGROUND_MODEL"),
        hf_token=_text(env, "HF_TOKEN"),
        hf_model_id=_text(env, "HF_MODEL_ID") or DEFAULT_HF_MODEL_ID,
        hf_provider=_text(env, "HF_PROVIDER"),
        openai_base_url=_text(env, "OPENAI_BASE_URL"),
        openai_api_key=_text(env, "OPENAI_API_KEY"),
        openai_model=_text(env, "OPENAI_MODEL") or DEFAULT_OPENAI_MODEL,
        azure_openai_endpoint=_text(env, "AZURE_OPENAI_ENDPOINT"),
        azure_openai_api_key=_text(env, "AZURE_OPENAI_API_KEY"),
        azure_openai_deployment=_text(env, "AZURE_OPENAI_DEPLOYMENT"),
        azure_openai_api_version=_text(env, "OPENAI_API_VERSION") or DEFAULT_AZURE_OPENAI_API_VERSION,
        local_gguf_path=_text(env, "LOCAL_GGUF_PATH"),
        space_id=_text(env, "SPACE_ID"),
        space_oauth=bool(_text(env, "SPACE_ID") and _text(env, "OAUTH_CLIENT_ID")),
    )
