"""The script the host starts inside the sandbox: ``python -I -B main.py TEMPLATE_CONFIG_JSON``.

Isolated mode (``-I``) puts no script directory on ``sys.path``, and nothing of the ``azure_sessions`` package may be
imported here: this directory is loaded by its path as the package ``_emulator_inside``, whose files import each
other relatively. Then the fork server runs (``forkserver.main``); it returns only in a forked child, as that
session's worker.
"""

import importlib
import importlib.util
import os
import sys

PACKAGE = "_emulator_inside"


def load_package() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location(
        PACKAGE, os.path.join(here, "__init__.py"), submodule_search_locations=[here]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    spec.loader.exec_module(package)


if __name__ == "__main__":
    load_package()
    importlib.import_module(f"{PACKAGE}.forkserver").main(sys.argv[1:])
