"""The azure-sessions wheel, built from this checkout and installed into fresh venvs of a bare interpreter.

Nothing here reaches an index: the wheel is built with the project's own hatchling (no build isolation) and its
dependencies come from the wheelhouse ``scripts/setup.sh test`` prepares. Each venv is made from the interpreter
that this test run's venv was made from, without pip and without its site-packages, so it starts empty; code runs
in it with ``python -I``, so neither this checkout nor the environment leaks in. The emulator the clients talk to is
the test run's own, except in the emulator-extra case, which serves one from the fresh venv's console script.
"""

from __future__ import annotations

import email.parser
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

import azure_sessions

ROOT = Path(__file__).resolve().parents[2]
WHEELHOUSE = ROOT / ".cache" / "wheelhouse"
"""Prepared by ``scripts/setup.sh test``: every dependency of every extra, at the versions the project venv has."""
SCRIPTED_MODEL = ROOT / "tests" / "support" / "scripted_model.py"
NEVER_WITH_THE_CLIENT = {"gradio", "fastapi", "uvicorn", "starlette", "smolagents", "ipython", "numpy", "pandas"}
"""Distributions a no-extras install must not bring in."""
EMULATOR_EXTRA = {"fastapi", "uvicorn", "python-multipart", "ipython", "numpy", "pandas", "matplotlib", "pillow",
                  "landlock", "pyseccomp"}  # fmt: skip
HEAVY_MODULES = ("gradio", "fastapi", "uvicorn", "starlette", "smolagents", "IPython")
"""Modules that ``import azure_sessions`` must not load, whatever is installed."""
CHILD_TIMEOUT = 120


def _clean_env() -> dict[str, str]:
    """The environment without pip or Python settings from this machine (pip reads no configuration file)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))}
    return env | {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


def _pip(*args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=_clean_env(), timeout=300
    )
    assert proc.returncode == 0, f"pip {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"


class FreshVenv:
    """A venv with the wheel installed; runs code in it isolated from this checkout."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.python = path / "bin" / "python"

    def run(self, code: str, **params: Any) -> Any:
        """Run ``code`` (``params`` is ``json.loads(sys.argv[1])``); returns the JSON its last output line holds."""
        proc = subprocess.run(
            [str(self.python), "-I", "-c", textwrap.dedent(code), json.dumps(params)],
            capture_output=True,
            text=True,
            env=_clean_env(),
            cwd=self.path,
            timeout=CHILD_TIMEOUT,
        )
        assert proc.returncode == 0, f"the child failed:\n{proc.stdout}{proc.stderr}"
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def distributions(self) -> set[str]:
        code = """
            import importlib.metadata, json
            print(json.dumps(sorted({d.metadata["Name"].lower() for d in importlib.metadata.distributions()})))
        """
        return set(self.run(code))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (WHEELHOUSE / "key").is_file():
        pytest.fail(f"{WHEELHOUSE.relative_to(ROOT)} is missing: run `bash scripts/setup.sh test` first")
    dist = tmp_path_factory.mktemp("dist")
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "--wheel-dir", str(dist), str(ROOT))
    (built,) = dist.glob("azure_sessions-*.whl")
    return built


@pytest.fixture(scope="module")
def base_python() -> str:
    """The interpreter this run's venv was made from: in CI, Debian's own python3."""
    return getattr(sys, "_base_executable", None) or sys.executable


def _fresh_venv(parent: Path, base_python: str, requirement: str) -> FreshVenv:
    # In a sub-directory: pytest's temporary directories are private (0700), a venv is world-readable like one a
    # user makes, which the emulator's sandbox needs (its worker runs the venv's interpreter under its own uid).
    root = parent / "venv"
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(root)], check=True, env=_clean_env())
    venv = FreshVenv(root)
    assert venv.distributions() == set(), "the fresh venv is not empty"
    _pip("--python", str(venv.python), "install", "-q", "--no-index", "--find-links", str(WHEELHOUSE), requirement)
    _pip("--python", str(venv.python), "check")
    return venv


@pytest.fixture(scope="module")
def core_venv(wheel: Path, base_python: str, tmp_path_factory: pytest.TempPathFactory) -> FreshVenv:
    return _fresh_venv(tmp_path_factory.mktemp("venv-core"), base_python, str(wheel))


@pytest.fixture(scope="module")
def agent_venv(wheel: Path, base_python: str, tmp_path_factory: pytest.TempPathFactory) -> FreshVenv:
    return _fresh_venv(tmp_path_factory.mktemp("venv-smolagents"), base_python, f"{wheel}[smolagents]")


@pytest.fixture(scope="module")
def emulator_venv(wheel: Path, base_python: str, tmp_path_factory: pytest.TempPathFactory) -> FreshVenv:
    return _fresh_venv(tmp_path_factory.mktemp("venv-emulator"), base_python, f"{wheel}[emulator]")


def test_wheel_holds_the_typed_library_and_declares_its_dependencies(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = f"azure_sessions-{azure_sessions.__version__}.dist-info"
        metadata = email.parser.Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert {"azure_sessions/py.typed", "azure_sessions/executor.py", "azure_sessions/emulator/inside/main.py"} <= set(
        names
    )
    assert all(name.startswith(("azure_sessions/", f"{info}/")) for name in names), "only the library is packaged"
    assert (metadata["Name"], metadata["Version"]) == ("azure-sessions", azure_sessions.__version__)
    requirements = [Requirement(text) for text in metadata.get_all("Requires-Dist")]
    assert {r.name for r in requirements if r.marker is None} == {"requests", "azure-identity"}
    by_extra = {
        extra: {r.name for r in requirements if r.marker is not None and r.marker.evaluate({"extra": extra})}
        for extra in metadata.get_all("Provides-Extra")
    }
    assert by_extra == {"smolagents": {"smolagents"}, "emulator": EMULATOR_EXTRA}
    assert "azure-sessions-emulator = azure_sessions.emulator.__main__:main" in entry_points


def test_no_extras_install_is_the_client_alone(core_venv: FreshVenv, emulator_endpoint: str, emulator_token: str):
    installed = core_venv.distributions()
    assert {"azure-sessions", "requests", "azure-identity"} <= installed
    assert not installed & NEVER_WITH_THE_CLIENT
    report = core_venv.run(
        """
        import io, json, sys
        params = json.loads(sys.argv[1])
        import azure_sessions
        from azure_sessions import SessionsClient
        loaded = sorted(m for m in params["heavy"] if m in sys.modules)
        try:
            from azure_sessions import AzureDynamicSessionsExecutor
            executor_error = None
        except ImportError as exc:
            executor_error = str(exc)
        with SessionsClient(params["endpoint"], credential=params["token"]) as client:
            value = client.execute("6 * 7").result
            client.upload(io.BytesIO(b"from a bare venv"), "bare.txt")
            names = [f.name for f in client.list_files()]
            content = client.read_bytes("bare.txt").decode()
            client.delete_session()
        print(json.dumps({"file": azure_sessions.__file__, "version": azure_sessions.__version__, "loaded": loaded,
                          "executor_error": executor_error, "value": value, "names": names, "content": content}))
        """,
        endpoint=emulator_endpoint,
        token=emulator_token,
        heavy=HEAVY_MODULES,
    )
    assert Path(report["file"]).is_relative_to(core_venv.path), "the installed wheel was imported, not the checkout"
    assert report["version"] == azure_sessions.__version__
    assert report["loaded"] == []
    assert "pip install 'azure-sessions[smolagents]'" in report["executor_error"]
    assert (report["value"], report["names"], report["content"]) == (42, ["bare.txt"], "from a bare venv")


def test_emulator_without_its_extra_says_what_to_install(core_venv: FreshVenv):
    proc = subprocess.run(
        [str(core_venv.path / "bin" / "azure-sessions-emulator"), "--port", "0"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=CHILD_TIMEOUT,
    )
    assert proc.returncode == 2
    assert "pip install 'azure-sessions[emulator]'" in proc.stderr and "Traceback" not in proc.stderr


def test_smolagents_extra_runs_a_code_agent_step(
    agent_venv: FreshVenv, emulator_endpoint: str, emulator_token: str, tmp_path: Path
):
    support = tmp_path / "support"
    support.mkdir()
    shutil.copy(SCRIPTED_MODEL, support)
    report = agent_venv.run(
        """
        import json, sys
        params = json.loads(sys.argv[1])
        import azure_sessions
        loaded = sorted(m for m in params["heavy"] if m in sys.modules)
        sys.path.insert(0, params["support"])
        from scripted_model import ScriptedModel, code_reply
        from smolagents import CodeAgent
        from smolagents.monitoring import AgentLogger, LogLevel
        from azure_sessions import AzureDynamicSessionsExecutor

        # Constructed as the smolagents proposal documents it: positional (imports, logger), keywords after.
        executor = AzureDynamicSessionsExecutor(
            [], AgentLogger(level=LogLevel.OFF),
            pool_management_endpoint=params["endpoint"], access_token_provider=lambda: params["token"],
        )
        step = "import sys\\nopen('/mnt/data/agent.txt', 'w').write(sys.executable)\\nfinal_answer(6 * 7)"
        model = ScriptedModel([code_reply(step)])
        agent = CodeAgent(tools=[], model=model, executor=executor, max_steps=2, verbosity_level=0)
        answer = agent.run("What is six times seven?")
        ran_in = executor.download_file("agent.txt").decode()
        executor.cleanup()
        print(json.dumps({"loaded": loaded, "answer": answer, "model_calls": len(model.calls), "ran_in": ran_in,
                          "gradio": "gradio" in sys.modules, "fastapi": "fastapi" in sys.modules}))
        """,
        endpoint=emulator_endpoint,
        token=emulator_token,
        heavy=HEAVY_MODULES,
        support=str(support),
    )
    assert report["loaded"] == [], "import azure_sessions loads smolagents only when the executor is asked for"
    assert (report["answer"], report["model_calls"]) == (42, 1)
    # The step ran in the emulator's sandbox (this test run's interpreter), not in the fresh venv.
    assert report["ran_in"] == os.path.abspath(sys.executable)
    assert not report["gradio"] and not report["fastapi"]


@pytest.fixture
def served_from_emulator_venv(emulator_venv: FreshVenv, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    token = "wheel-test-token"
    proc = subprocess.Popen(
        [str(emulator_venv.path / "bin" / "azure-sessions-emulator"), "--port", "0", "--token", token,
         "--prestart", "1", "--data-root", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_clean_env() | {"PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or ()], daemon=True).start()
    seen: list[str] = []
    try:
        while not any("Press Ctrl-C" in line for line in seen):
            seen.append(lines.get(timeout=CHILD_TIMEOUT))
        endpoint = next(line.split("endpoint:")[1].strip() for line in seen if "endpoint:" in line)
        yield endpoint, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_emulator_extra_serves_with_the_sandbox_in_its_own_venv(
    emulator_venv: FreshVenv, served_from_emulator_venv: tuple[str, subprocess.Popen]
):
    assert emulator_venv.distributions() >= EMULATOR_EXTRA
    endpoint, proc = served_from_emulator_venv
    report = emulator_venv.run(
        """
        import json, sys
        params = json.loads(sys.argv[1])
        from azure_sessions import SessionsClient
        loaded = sorted(m for m in params["heavy"] if m in sys.modules)
        code = (
            "import sys, IPython, numpy, pandas, PIL\\nimport matplotlib.pyplot as plt\\n"
            "print(sys.executable)\\nplt.plot([1, 2, 3], [1, 4, 9])\\nplt.show()"
        )
        with SessionsClient(params["endpoint"], credential=params["token"]) as client:
            result = client.execute(code)
            client.delete_session()
        print(json.dumps({"loaded": loaded, "status": result.status, "stdout": result.stdout,
                          "stderr": result.stderr, "images": [image.format for image in result.images]}))
        """,
        endpoint=endpoint,
        token="wheel-test-token",
        heavy=HEAVY_MODULES,
    )
    assert report["loaded"] == []
    assert report["status"] == "Succeeded", report["stderr"]
    assert report["stdout"].strip() == str(emulator_venv.python), "the sandbox runs the venv's own interpreter"
    assert report["images"] == ["png"], report
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
