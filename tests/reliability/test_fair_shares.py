"""One stranger cannot take the page down: each attack of the fair-shares issue, at the protocol level (what a tab
sends, bench/visitor.py), against the app configured as a Space (its proxy's X-Forwarded-For trusted, so each test's
visitors come from addresses of their own) with small caps. Each test checks what the attacker got, that a
bystander's next message succeeds, and where it says so, that memory and disk come back after the attacker leaves.

Margins: the server's RSS within MEMORY_MARGIN of where it started once the attacker's session has ended (Python
keeps some freed memory for reuse); the cache directory within DISK_MARGIN.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
import requests

from bench.visitor import EventRun, Visitor
from tests.reliability.support import run_together, running_playground, wait_until

TOKEN = "fair-shares-token"
POOL_LIMIT = 12  # the emulator's own cap: the app must refuse before the pool does
MEMORY_MARGIN = 60 * 2**20
DISK_MARGIN = 2 * 2**20
GRACE = 6.0
SPACE_LIKE = {
    "space_id": "tests/fair-shares",  # a Space: X-Forwarded-For is its proxy's word, and per-visitor caps apply
    "default_model": "none",
    "max_sandboxes": 9,
    "sandboxes_per_visitor": 6,
    "runs_per_visitor": 2,
    "concurrency": 4,
    "new_sessions_per_minute": 12,
    "tab_grace": GRACE,
    "execution_timeout": 60.0,
    "max_upload_bytes": 2 * 2**20,
    "upload_quota_bytes": 3 * 2**20,
}
ANSWER_2 = "```text\\n2\\n```"  # the "No model" answer to 1+1, as the chat's JSON carries it


def known_settings(values: dict) -> dict:
    """The settings this version has (so the same test runs, and fails, against a version without them)."""
    from playground.settings import Settings

    names = {f.name for f in dataclasses.fields(Settings)}
    return {key: value for key, value in values.items() if key in names}


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[SimpleNamespace]:
    from playground.backend import local_sandbox_limits
    from playground.settings import Settings
    from tests.reliability.conftest import checked_emulator

    limits = local_sandbox_limits(Settings(**known_settings(SPACE_LIKE)))  # the app's own sandbox, as it starts it
    with checked_emulator(token=TOKEN, prestart=1, max_sessions=POOL_LIMIT, limits=limits) as emu:
        cache = tmp_path_factory.mktemp("gradio-cache")
        with running_playground(emu, TOKEN, {}, cache, **known_settings(SPACE_LIKE)) as (url, served):
            config = requests.get(url + "config", timeout=30).json()
            yield SimpleNamespace(url=url, served=served, emu=emu, cache=cache, config=config)


@pytest.fixture(autouse=True)
def pool_drains(app) -> Iterator[None]:
    """Each test starts with no sandbox held, and leaves none once its visitors are gone (their tabs' grace)."""
    yield
    wait_until(lambda: not app.emu.session_identifiers(), timeout=GRACE + 60, what="every sandbox given back")


_address = iter(range(1, 250))


def new_address() -> str:
    """A public address of its own for each caller (the per-visitor caps are per address)."""
    return f"93.184.{next(_address)}.34"


def visitor(app, address: str, **kwargs) -> Visitor:
    return Visitor(app.url, app.config, headers={"X-Forwarded-For": address}, **kwargs)


def opened(app, address: str, **kwargs) -> Visitor:
    tab = visitor(app, address, **kwargs)
    tab.open()
    return tab


def python(tab: Visitor, code: str) -> EventRun:
    """Send `code` as a "No model" message and follow it to its end."""
    return tab.trigger("chat-input", "submit", **{"chat-input": {"text": code, "files": []}})


def bystander_latency(app, code: str = "1+1") -> float:
    """A newcomer from elsewhere sends `code`: seconds from sending to the answer (it must be the right one)."""
    tab = opened(app, new_address())
    try:
        run = python(tab, code)
        assert run.success and ANSWER_2 in run.text(), run.error or run.text()[-500:]
        return (run.completed or time.perf_counter()) - run.sent
    finally:
        tab.close()


def rss() -> int:
    with open("/proc/self/status") as status:
        return int(status.read().split("VmRSS:")[1].split()[0]) * 1024


def disk_used(root: Path) -> int:
    """Bytes really stored under `root` (blocks: a sparse file counts for what it holds)."""
    return sum(p.lstat().st_blocks * 512 for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def close_all(tabs: list[Visitor]) -> None:
    for tab in tabs:
        tab.close()


# ---------------------------------------------------------------------------------------------------------------
def test_a_session_hash_without_its_key_reaches_nothing(app) -> None:
    victim = opened(app, new_address())
    try:
        assert python(victim, "secret = 'hushed' + 'word'\nsecret").success
        # another client reuses the victim's tab (its Gradio session hash) without the browser key
        intruder = visitor(app, new_address(), session_hash=victim.session_hash)
        for code in ("print(secret)", "open('/mnt/data/planted.txt', 'w').write('x')"):
            run = python(intruder, code)
            assert "hushedword" not in run.text() and "planted" not in run.text()
        intruder.trigger("refresh-btn", "click")
        listed = python(victim, "import os\nsorted(os.listdir('/mnt/data'))")
        assert "planted.txt" not in listed.text()  # nothing ran in the victim's sandbox
        assert "hushedword" in python(victim, "secret").text()  # and the victim's session is untouched
    finally:
        victim.close()


def test_one_client_cannot_take_every_sandbox(app) -> None:
    attacker = new_address()
    tabs = [opened(app, attacker) for _ in range(SPACE_LIKE["sandboxes_per_visitor"] + 2)]
    try:
        runs: list[EventRun] = []
        run_together(lambda tab: runs.append(python(tab, "1+1")), tabs)
        served = [run for run in runs if ANSWER_2 in run.text()]
        told = [run for run in runs if "sandboxes open from your network" in run.text()]
        assert len(served) <= SPACE_LIKE["sandboxes_per_visitor"]
        assert len(served) + len(told) == len(tabs)  # the others read what to do, not an error from the pool
        assert "close another tab of this playground" in told[0].text()
        assert len(app.emu.session_identifiers()) <= SPACE_LIKE["max_sandboxes"]
        bystander_latency(app)  # the next real visitor is served
    finally:
        close_all(tabs)


def test_one_client_cannot_hold_every_run_slot(app) -> None:
    attacker = new_address()
    tabs = [opened(app, attacker) for _ in range(SPACE_LIKE["concurrency"] + 1)]
    runs: list[EventRun] = []
    threads = [threading.Thread(target=lambda t=t: runs.append(python(t, "import time\ntime.sleep(25)\n1+1")))
               for t in tabs]  # fmt: skip
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(app.emu.session_identifiers()) >= SPACE_LIKE["runs_per_visitor"],
                   timeout=30, what="the attacker's runs started")  # fmt: skip
        latency = bystander_latency(app)
        assert latency < 10.0, f"a bystander's 1+1 waited {latency:.1f} s behind one client's runs"
    finally:
        for tab in tabs:  # Stop: the attacker's runs end (their code is interrupted), then the tabs close
            tab.trigger("chat-input", "stop")
        for thread in threads:
            thread.join(90)
        close_all(tabs)
    waited = [run for run in runs if "from your network are running" in run.text()]
    assert waited, "the runs held back were not told why"


def test_a_closed_tab_gives_its_sandbox_back_after_a_grace_that_a_reload_survives(app) -> None:
    address = new_address()
    first = opened(app, address)
    assert python(first, "x = 41").success
    key = first.browser_key
    first.close()
    reloaded = visitor(app, address)  # the same browser (its key), reloading within the grace
    reloaded.browser_key = key
    reloaded.open()
    assert "42" in python(reloaded, "x + 1").text()
    before = set(app.emu.session_identifiers())
    reloaded.close()
    wait_until(lambda: not before & set(app.emu.session_identifiers()), timeout=GRACE + 30,
               what="the closed tab's sandbox given back")  # fmt: skip
    back = visitor(app, address)
    back.browser_key = key
    back.open()
    try:
        assert "sandbox was given back" in str(back.value("chatbot"))  # the page says why its variables are gone
        assert "NameError" in python(back, "x").text()
    finally:
        back.close()


def test_a_run_in_progress_is_not_cut_when_its_tab_closes(app) -> None:
    tab = opened(app, new_address())
    done: list[EventRun] = []
    code = f"import time\ntime.sleep({GRACE * 2 + 4})"
    thread = threading.Thread(target=lambda: done.append(python(tab, code)), daemon=True)
    started = time.monotonic()
    thread.start()
    wait_until(lambda: app.emu.session_identifiers(), timeout=30, what="the run's sandbox")
    (sandbox,) = app.emu.session_identifiers()
    tab.close()
    time.sleep(max(0.0, started + GRACE + 4 - time.monotonic()))  # past the grace, the run still going
    assert sandbox in set(app.emu.session_identifiers())
    thread.join(120)


def scratch_dirs(app) -> set[str]:
    """The per-session temporary directories on this machine (in Gradio's cache, and the system's temp dir)."""
    return {p.name for p in app.cache.iterdir() if p.is_dir()} | {
        name for name in os.listdir(tempfile.gettempdir()) if name.startswith("playground-")
    }


def test_new_sessions_per_minute_are_capped_and_fresh_sessions_cost_nothing(app) -> None:
    scratch_before = scratch_dirs(app)
    memory_before = rss()
    address = new_address()
    tabs = [opened(app, address) for _ in range(SPACE_LIKE["new_sessions_per_minute"] + 8)]
    refused = [tab for tab in tabs if "new sessions a minute is the limit" in str(tab.value("chatbot"))]
    assert len(refused) >= 8 and "wait about" in str(refused[0].value("chatbot"))
    gradio_tabs = app.served.demo.state_holder.session_data  # what Gradio keeps per tab (~150 KB each)
    kept_before = len(gradio_tabs)
    many = [opened(app, new_address()) for _ in range(100)]  # fresh visitors that never run anything
    try:
        assert scratch_dirs(app) == scratch_before
        assert rss() - memory_before < MEMORY_MARGIN
        bystander_latency(app)
    finally:
        close_all(tabs + many)
    wait_until(lambda: len(gradio_tabs) <= kept_before, timeout=30, what="Gradio's state of the closed tabs dropped")


def test_uploads_need_a_live_page_count_against_it_and_leave_nothing_partial(app) -> None:
    before = sorted(p.name for p in app.cache.rglob("*"))
    anonymous = requests.post(app.url + "gradio_api/upload", files={"files": ("x.bin", b"0" * 1000)}, timeout=30)
    assert anonymous.status_code == 403 and "open page" in anonymous.text
    assert sorted(p.name for p in app.cache.rglob("*")) == before

    tab = opened(app, new_address())
    try:
        reply = tab.upload([("one.csv", b"a,b\n1,2\n")])
        assert reply.status_code == 200, reply.text
        (path,) = reply.json()
        over = tab.upload([(f"{n}.bin", os.urandom(SPACE_LIKE["max_upload_bytes"] - 1000)) for n in range(2)])
        assert over.status_code == 413 and "per session" in over.text  # the session's quota, not the file limit
        tab.trigger("upload-btn", "upload", **{"upload-btn": [{"path": path, "meta": {"_type": "gradio.FileData"},
                                                               "orig_name": "one.csv"}]})  # fmt: skip
        assert (
            "one.csv" in str(tab.value("file-list"))
            or "one.csv" in python(tab, "import os\nos.listdir('/mnt/data')").text()
        )
        wait_until(lambda: not Path(path).exists(), timeout=10, what="the used upload deleted from Gradio's cache")

        abort_upload(app.url, tab_ticket(tab), size=SPACE_LIKE["max_upload_bytes"] - 2**18, sent=2**20)
        wait_until(lambda: not [p for p in app.cache.iterdir() if p.is_file()], timeout=30,
                   what="the aborted upload's partial file removed")  # fmt: skip
    finally:
        tab.close()
    ticket = tab_ticket(tab) or ""
    session = app.served.registry.by_ticket(ticket)
    wait_until(lambda: session is None or session.orphaned_at is not None, timeout=30,
               what="the server saw the page go (its unload event)")  # fmt: skip
    closed = requests.post(app.url + "gradio_api/upload", files={"files": ("late.bin", b"1" * 10)},
                           headers={"x-playground-ticket": ticket}, timeout=30)  # fmt: skip
    assert closed.status_code == 403  # a page that is gone uploads nothing


def tab_ticket(tab: Visitor) -> str | None:
    try:
        return tab.value("ticket-value")
    except StopIteration:
        return None


def abort_upload(url: str, ticket: str | None, size: int, sent: int) -> None:
    """Start a multipart upload of `size` bytes, send `sent` of them, and hang up."""
    parts = urlsplit(url)
    boundary = "abort" + os.urandom(8).hex()
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"cut.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()  # fmt: skip
    request = (
        f"POST {parts.path}gradio_api/upload HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {size + len(head)}\r\n"
        + (f"x-playground-ticket: {ticket}\r\n" if ticket else "")
        + "\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as conn:
        conn.sendall(request + head + b"z" * sent)
        time.sleep(0.5)  # let the server write what arrived, as an upload cut by a closed tab would


def test_a_cache_url_computed_with_gradios_seed_file_fetches_nothing(app) -> None:
    import gradio

    seed_file = Path(gradio.__file__).parent / "hash_seed.txt"
    if not seed_file.exists():
        pytest.skip("Gradio could not write its seed file here (it then uses a random seed of its own)")
    content = b"region,revenue\nnorth,7\n"
    tab = opened(app, new_address())
    try:
        reply = tab.upload([("guess.csv", content)])
        assert reply.status_code == 200, reply.text
        (real,) = reply.json()
        digest = hashlib.sha256(seed_file.read_text().strip().encode() + content).hexdigest()
        guessed = str(Path(real).parent.parent / digest / "guess.csv")
        assert requests.get(f"{app.url}gradio_api/file={real}", timeout=30).status_code == 200  # the control
        assert requests.get(f"{app.url}gradio_api/file={guessed}", timeout=30).status_code != 200
    finally:
        tab.close()


def test_a_huge_message_is_refused_at_once(app) -> None:
    tab = opened(app, new_address())
    try:
        started = time.perf_counter()
        run = python(tab, "x = 1\n" + "#" * (10 * 2**20))
        assert time.perf_counter() - started < 20.0
        assert "the limit is 100,000" in run.text()
        assert "NameError" in python(tab, "x").text()  # nothing of it ran
    finally:
        tab.close()


def test_output_floods_and_a_huge_image_leave_the_server_as_it_was(app) -> None:
    tab = opened(app, new_address())
    python(tab, "1+1")
    memory_before, disk_before = rss(), disk_used(app.cache)
    try:
        for _ in range(3):
            assert python(tab, "for i in range(400_000):\n    print('flood line', i)").success
        image = ("import numpy as np, matplotlib.pyplot as plt\nplt.figure(figsize=(40, 40), dpi=100)\n"
                 "plt.imshow(np.random.default_rng(0).random((4000, 4000, 3)))\nplt.axis('off')\nplt.show()")  # fmt: skip
        shown = python(tab, image)
        assert "ImageTooLarge" in shown.text() and "returns images up to 8 MiB" in shown.text()  # never sent here
        assert disk_used(app.cache) - disk_before < DISK_MARGIN
        assert bystander_latency(app) < 10.0
    finally:
        tab.trigger("new-session", "click")  # the attacker's session ends (its sandbox and files go)
        tab.close()
    wait_until(lambda: rss() - memory_before < MEMORY_MARGIN, timeout=30, what="the server's memory back")
    assert disk_used(app.cache) - disk_before < DISK_MARGIN


def select(tab: Visitor, name: str) -> EventRun:
    return tab.trigger("file-list", "select",
                       event_data={"index": [0, 1], "value": name, "row_value": ["", name, "", ""]})  # fmt: skip


def test_previews_of_sparse_and_wide_files_read_only_their_head(app) -> None:
    tab = opened(app, new_address())
    disk_before = disk_used(app.cache)
    try:
        python(tab, "open('/mnt/data/sparse.csv', 'wb').truncate(1 << 30)\n"
                    "open('/mnt/data/wide.csv', 'w').write(','.join(f'c{i}' for i in range(30_000)) + '\\n' + "
                    "','.join('1' * 30_000) + '\\n')")  # fmt: skip
        for name in ("sparse.csv", "sparse.csv"):
            select(tab, name)
        assert disk_used(app.cache) - disk_before < DISK_MARGIN  # no copy of the 1 GB file
        started = time.perf_counter()
        wide = select(tab, "wide.csv")
        assert time.perf_counter() - started < 10.0
        caption = str(tab.value("preview-caption"))
        assert "first 50 of 30,000 columns" in caption, caption or wide.error
        assert bystander_latency(app) < 10.0
    finally:
        tab.close()


def test_a_zip_of_sparse_files_is_refused_past_its_limit(app) -> None:
    tab = opened(app, new_address())
    try:
        python(tab, "for n in range(3):\n    open(f'/mnt/data/hole{n}.bin', 'wb').truncate(300 << 20)")
        cpu_before = time.process_time()
        tab.trigger("export-zip", "click")
        assert "add up to 900.0 MB" in str(tab.value("file-status"))
        assert time.process_time() - cpu_before < 5.0
    finally:
        tab.close()


def test_two_thousand_new_files_are_offered_within_bounds(app) -> None:
    tab = opened(app, new_address())
    try:
        started = time.perf_counter()
        run = python(tab, "for i in range(2000):\n    open(f'/mnt/data/f{i:04}.txt', 'w').write('x')")
        assert time.perf_counter() - started < 30.0
        assert "1990 more new files are in /mnt/data" in run.text()
        copies = [p for p in app.cache.rglob("f*.txt")]
        assert len(copies) <= 10
    finally:
        tab.close()
