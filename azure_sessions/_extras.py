"""Optional parts of the distribution: a clear error naming the extra to install when one is missing."""

from __future__ import annotations

from collections.abc import Iterable
from importlib.util import find_spec

DISTRIBUTION = "azure-sessions"


def missing_extra(extra: str, feature: str, modules: Iterable[str]) -> ImportError | None:
    """An ImportError saying which ``pip install`` brings ``feature``'s missing modules, or None if none is missing."""
    missing = [module for module in modules if find_spec(module) is None]
    if not missing:
        return None
    return ImportError(
        f"{feature} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: "
        f"pip install '{DISTRIBUTION}[{extra}]'",
        name=missing[0],
    )
