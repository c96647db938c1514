"""azure_sessions: a client for Azure Container Apps dynamic sessions and a smolagents executor on top of it.

>>> from azure_sessions import SessionsClient
>>> with SessionsClient(endpoint, credential=DefaultAzureCredential()) as client:
...     client.execute("print(6 * 7)").stdout
'42\\n'

Importing this package does not import gradio nor smolagents; ``AzureDynamicSessionsExecutor`` (which needs
smolagents: the ``smolagents`` extra) is loaded on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .client import SessionsClient
from .dialects import DEFAULT_API_VERSION, SUPPORTED_API_VERSIONS
from .errors import MAX_UPLOAD_BYTES, InterruptNotSupportedError, SessionsError
from .models import (
    MAX_EXECUTION_SECONDS,
    SESSION_LOST_NOTICE,
    ExecutionError,
    ExecutionImage,
    ExecutionReport,
    ExecutionResult,
    FileInfo,
    SessionInfo,
)
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .executor import AzureDynamicSessionsExecutor

__all__ = [
    "DEFAULT_API_VERSION",
    "MAX_EXECUTION_SECONDS",
    "MAX_UPLOAD_BYTES",
    "SESSION_LOST_NOTICE",
    "SUPPORTED_API_VERSIONS",
    "AzureDynamicSessionsExecutor",
    "ExecutionError",
    "ExecutionImage",
    "ExecutionReport",
    "ExecutionResult",
    "FileInfo",
    "InterruptNotSupportedError",
    "RetryPolicy",
    "SessionInfo",
    "SessionsClient",
    "SessionsError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name == "AzureDynamicSessionsExecutor":
        from .executor import AzureDynamicSessionsExecutor

        return AzureDynamicSessionsExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
