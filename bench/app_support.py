"""The app under test for bench_app: the app process (`python -m bench.app_support PORT [PRESTART]`, the real app
with a scripted model and timing stamps), and the browser side (open a tab, submit, wait, in-page timings) plus
per-process CPU accounting. See bench_app.py for what is measured."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from typing import Any

from azure_sessions.emulator.inside.strays import process_table
from bench.common import ROOT
from tests.support.harness import free_port

MODEL_LABEL = "Scripted benchmark model"
CHUNK_DELAY = 0.1
TASK = "Summarise a random sample and plot it (benchmark {tag})"
STEP_CODES = [
    "import numpy as np\nvalues = np.random.default_rng(1).normal(size=10_000)\nprint(values.mean().round(3))",
    "import matplotlib.pyplot as plt\nplt.figure(figsize=(5, 3))\nplt.hist(values, bins=40)\nplt.title('sample')\n"
    "plt.show()",
    "final_answer(f'sample mean {values.mean():.3f}')",
]
FINAL = "#chatbot [data-testid='bot'][aria-label^=\"bot's message: **Final answer**\"]"
PENDING = "#chatbot .thought-group .loading-spinner"
TARGET_PENDING_MS = 500.0
TARGET_LOAD_RATIO = 2.0
RUN_TIMEOUT_MS = 120_000

PROBE_JS = """([finalSel, pendingSel]) => {
  const w = window;
  const answers = () => document.querySelectorAll(finalSel).length;
  w.__bench = {enter: null, pending: null, done: null, enterEpoch: null, pendingEpoch: null, before: answers()};
  if (w.__benchInstalled) return;
  w.__benchInstalled = true;
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && w.__bench.enter === null && e.target.closest('#chat-input')) {
      w.__bench.enter = performance.now();
      w.__bench.enterEpoch = Date.now();
    }
  }, {capture: true});
  const check = () => {
    const b = w.__bench;
    if (b.enter === null) return;
    const now = performance.now();
    if (b.pending === null && document.querySelector(pendingSel)) {
      b.pending = now;
      b.pendingEpoch = Date.now();
    }
    if (b.done === null && answers() > b.before) b.done = now;
  };
  new MutationObserver(check).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


# ---------------------------------------------------------------------------------------------------- app process
def responder(messages: list) -> str:
    """Step n of the 3-step script: n = the model's replies since the latest task message."""
    from tests.support.scripted_model import code_reply

    def text(message: Any) -> str:
        content = message.get("content") if isinstance(message, dict) else getattr(message, "content", "")
        if isinstance(content, list):
            return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
        return str(content or "")

    def role(message: Any) -> str:
        value = message.get("role") if isinstance(message, dict) else getattr(message, "role", "")
        return str(getattr(value, "value", value)).lower()

    last_task = max((i for i, m in enumerate(messages) if "New task" in text(m) and role(m) == "user"), default=0)
    done = sum(1 for m in messages[last_task:] if role(m) == "assistant")
    step = min(done, len(STEP_CODES) - 1)
    return code_reply(STEP_CODES[step], f"Step {step + 1} of the benchmark task.")


def serve(port: int, prestart: int | None = None) -> int:
    """Build and serve the app (embedded emulator), then obey commands on stdin: `wait_pool`, `quit`.

    `prestart` overrides the embedded emulator's warm pool (PLAYGROUND_WARM_SANDBOXES) in this process only.
    """
    import playground.handlers as handlers_module
    from playground.settings import Settings
    from playground.ui import build_app
    from tests.support.scripted_model import ScriptedModel

    stamps: dict[str, list[float]] = {}
    original = handlers_module.Handlers.submit

    @functools.wraps(original)  # Gradio reads the original's signature to pass the request
    def submit(self: Any, message: Any, *args: Any, **kwargs: Any) -> Any:
        """The submit handler (it starts the run and returns its first update), with wall-clock stamps (entry,
        first update ready) keyed by the task text."""
        entry = time.time()
        text = str((message or {}).get("text") or "")
        update = original(self, message, *args, **kwargs)
        stamps[text] = [entry, time.time()]
        return update

    handlers_module.Handlers.submit = submit  # this process only: the split of Enter -> pending step
    settings = Settings(server_port=port) if prestart is None else Settings(server_port=port, warm_sandboxes=prestart)
    model = ScriptedModel(responder=responder, chunk_delay=CHUNK_DELAY)
    app = build_app(settings, extra_models={MODEL_LABEL: lambda: model})
    app.launch(prevent_thread_lock=True, quiet=True)
    emulator = app.backend.emulator
    print("READY", emulator.sandbox_mode if emulator else "external", flush=True)
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "quit":
                break
            if command == "stamps":
                print("STAMPS", json.dumps(stamps), flush=True)
                stamps.clear()
            if command == "wait_pool":
                start = time.perf_counter()
                ok = emulator.wait_for_pool(180) if emulator else True
                print(f"POOL {ok} {time.perf_counter() - start:.3f}", flush=True)
    finally:
        app.close()
    return 0


class AppProcess:
    def __init__(self, prestart: int | None = None) -> None:
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.app_support",
                str(self.port),
                *([str(prestart)] if prestart is not None else []),
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.sandbox = self._expect("READY")[0]
        self.url = f"http://127.0.0.1:{self.port}/"

    def _expect(self, word: str) -> list[str]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(word + " "):
                return line.split()[1:]
        raise RuntimeError(f"the app process ended (exit code {self.proc.wait()})")

    def wait_pool(self) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write("wait_pool\n")
        self.proc.stdin.flush()
        ok, waited = self._expect("POOL")
        if ok != "True":
            raise RuntimeError("the app's emulator pool did not refill")
        return float(waited)

    def stamps(self) -> dict[str, list[float]]:
        """Task text -> [handler entry, first update ready] (epoch seconds) since the last call."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("stamps\n")
        self.proc.stdin.flush()
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("STAMPS "):
                return json.loads(line[len("STAMPS ") :])
        raise RuntimeError("the app process ended")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------------------------------------------- browser side
def open_tab(browser: Any, url: str) -> tuple[Any, Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(url)
    page.locator("#chat-input textarea").wait_for(state="visible", timeout=60_000)
    page.locator('#session-panel [data-key="Model"]').filter(has_text=MODEL_LABEL).wait_for(timeout=60_000)
    page.evaluate(PROBE_JS, [FINAL, PENDING])
    return context, page


def submit(page: Any, tag: str) -> str:
    page.evaluate(PROBE_JS, [FINAL, PENDING])
    box = page.locator("#chat-input textarea")
    text = TASK.format(tag=tag)
    box.fill(text)
    box.press("Enter")
    return text


def finish(page: Any) -> dict[str, float | bool]:
    """Wait for the run's final answer; returns in-page timings (ms from Enter) and whether it failed."""
    try:
        page.wait_for_function("window.__bench.done !== null", timeout=RUN_TIMEOUT_MS, polling=100)
    except Exception:  # a timeout is a failed run
        return {"failed": True, "pending": float("nan"), "done": float("nan")}
    b = page.evaluate("window.__bench")
    page.locator("#chat-input button[aria-label='Stop']").wait_for(state="detached", timeout=30_000)
    failed_steps = page.locator("#chatbot .thought-group .title").filter(has_text="failed").count()
    answer = page.locator(FINAL).last.inner_text()
    return {
        "failed": failed_steps > 0 or "sample mean" not in answer,
        "pending": b["pending"] - b["enter"],
        "done": b["done"] - b["enter"],
        "enter_epoch": b["enterEpoch"] / 1000,
        "pending_epoch": b["pendingEpoch"] / 1000,
    }


def cpu_snapshot() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, user+system CPU seconds) for every process (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    return {pid: (stat.ppid, stat.cpu_ticks / tick) for pid, stat in process_table().items()}


def cpu_by_group(before: dict, after: dict, app_pid: int) -> dict[str, float]:
    """CPU seconds spent between two snapshots by: the app process, its sandbox workers (those that existed before,
    and those started in between: pool refills and cold starts), and the browser (this driver's other children)."""

    def descends(pid: int, root: int) -> bool:
        seen = 0
        while pid > 1 and seen < 64:
            pid = after.get(pid, (0, 0.0))[0]
            if pid == root:
                return True
            seen += 1
        return False

    me = os.getpid()
    groups = {"app server": 0.0, "sandboxes in use": 0.0, "sandboxes started meanwhile": 0.0, "browser": 0.0}
    for pid, (_, cpu) in after.items():
        spent = cpu - before.get(pid, (0, 0.0))[1]
        if pid == app_pid:
            groups["app server"] += spent
        elif descends(pid, app_pid):
            groups["sandboxes in use" if pid in before else "sandboxes started meanwhile"] += spent
        elif pid != me and descends(pid, me):
            groups["browser"] += spent
    return groups


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None))
