"""Pure parts without HTTP: name validation and symlink-proof file access, request parsing, fault rules."""

from __future__ import annotations

import os

import pytest

from azure_sessions.dialects import API_VERSIONS
from azure_sessions.emulator import files, wire
from azure_sessions.emulator.errors import EmulatorError
from azure_sessions.emulator.faults import FaultInjector, parse_rule, parse_rules


@pytest.mark.parametrize(
    ("name", "directory", "expected"),
    [
        ("a.txt", None, ["a.txt"]),
        ("/mnt/data/a.txt", None, ["a.txt"]),
        ("sub/dir/a.txt", None, ["sub", "dir", "a.txt"]),
        ("./a.txt", None, ["a.txt"]),
        ("a.txt", "/", ["a.txt"]),
        ("a.txt", "/mnt/data", ["a.txt"]),
        ("a.txt", "", ["a.txt"]),
        ("a.txt", "reports", ["reports", "a.txt"]),
        ("weird name #1 (%).csv", None, ["weird name #1 (%).csv"]),
        ("ünïcode-名前.txt", None, ["ünïcode-名前.txt"]),
        (".hidden", None, [".hidden"]),
    ],
)
def test_split_path_accepts(name, directory, expected):
    assert files.split_path(name, directory) == expected


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/",
        "..",
        "../x",
        "a/../../x",
        "/etc/passwd",
        "/mnt/data/../etc",
        "a\x00b",
        "a\nb",
        "a\\..\\b",
        "x" * 256,
        "/mnt/datax/a",
        "//etc/passwd",
    ],
)
def test_split_path_refuses(name):
    with pytest.raises(EmulatorError) as info:
        files.split_path(name)
    assert info.value.status == 400 and info.value.code == "InvalidFileName"


def test_directory_parameter_cannot_escape():
    with pytest.raises(EmulatorError):
        files.split_path("a.txt", "../other")
    with pytest.raises(EmulatorError):
        files.split_path("a.txt", "/etc")


def test_symlinks_are_refused_everywhere(tmp_path):
    root = tmp_path / "session"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    os.symlink(outside / "secret.txt", root / "link.txt")
    os.symlink(outside, root / "linkdir")
    (root / "ok.txt").write_text("ok")
    for parts in (["link.txt"], ["linkdir", "secret.txt"]):
        with pytest.raises(EmulatorError) as info:
            files.open_for_read(root, parts)
        assert (info.value.status, info.value.code) == (409, "LinkNotFollowed")
        assert f"{'/'.join(parts[:1])!r} is a link: links are not followed" in info.value.message
    with pytest.raises(EmulatorError):
        files.stat_file(root, ["linkdir", "secret.txt"])
    with pytest.raises(EmulatorError):
        files.list_dir(root, ["linkdir"])
    upload = files.Upload(tmp_path / "staging")
    upload.write(b"data")
    with pytest.raises(EmulatorError):
        upload.publish(root, ["linkdir", "new.txt"], None)
    upload.discard()
    assert not (outside / "new.txt").exists()
    listed = [e.name for e in files.list_dir(root, [])]
    assert listed == ["ok.txt"]  # links are not listed


def test_upload_publish_list_stat_delete(tmp_path):
    root = tmp_path / "session"
    root.mkdir()
    upload = files.Upload(tmp_path / "staging", limit=10)
    upload.write(b"hello")
    entry = upload.publish(root, ["sub", "a.txt"], None)
    assert (entry.name, entry.directory, entry.size, entry.is_dir) == ("a.txt", "sub", 5, False)
    assert (root / "sub" / "a.txt").read_bytes() == b"hello"
    assert [(e.path, e.is_dir) for e in files.list_dir(root, [], recursive=True)] == [
        ("sub", True),
        ("sub/a.txt", False),
    ]
    assert files.stat_file(root, ["sub", "a.txt"]).content_type == "text/plain; charset=utf-8"
    files.delete(root, ["sub"])
    assert list(root.iterdir()) == []
    with pytest.raises(EmulatorError) as info:
        files.delete(root, ["sub"])
    assert info.value.status == 404
    too_big = files.Upload(tmp_path / "staging", limit=10)
    too_big.write(b"x" * 6)
    too_big.write(b"x" * 6)
    assert too_big.too_large
    too_big.discard()
    assert list((tmp_path / "staging").iterdir()) == []


def test_iso_time_has_seven_fraction_digits():
    assert files.iso_time(0.5) == "1970-01-01T00:00:00.5000000Z"


ENVELOPE = API_VERSIONS["2024-02-02-preview"]
STRICT = API_VERSIONS["2024-10-02-preview"]
NEWEST = API_VERSIONS["2025-10-02-preview"]


@pytest.mark.parametrize(
    ("body", "traits"),
    [
        ({"code": "1"}, ENVELOPE),
        ({"properties": {"code": "1"}}, ENVELOPE),
        ({"codeInputType": "INLINE", "executionType": "SYNCHRONOUS", "code": "1", "timeoutInSeconds": 5}, STRICT),
        ({"codeInputType": "InlineBase64", "code": "MQ==", "timeoutInSeconds": "7"}, ENVELOPE),
        ({"code": "1", "timeoutInSeconds": 7}, NEWEST),
        ({"properties": {"code": "1", "timeoutInSeconds": 7}}, NEWEST),
    ],
)
def test_execution_request_is_liberal_where_the_version_is(body, traits):
    parsed = wire.parse_execution_request(body, traits)
    assert parsed.code == "1" and parsed.asynchronous is False


@pytest.mark.parametrize(
    ("body", "traits", "field"),
    [
        ([], ENVELOPE, None),
        ({"properties": {}}, ENVELOPE, "code"),
        ({"code": 1}, ENVELOPE, "code"),
        ({"code": "1", "codeInputType": "Weird"}, ENVELOPE, "codeInputType"),
        ({"code": "1", "executionType": "x"}, ENVELOPE, "executionType"),
        ({"code": "1", "timeoutInSeconds": "soon"}, ENVELOPE, "timeoutInSeconds"),
        ({"shellCommand": "ls"}, ENVELOPE, "shellCommand"),
        ({"code": "!!", "codeInputType": "InlineBase64"}, ENVELOPE, "code"),
        ({"code": "1", "executionType": "Synchronous", "timeoutInSeconds": 5}, STRICT, "codeInputType"),
        ({"code": "1", "codeInputType": "Inline", "timeoutInSeconds": 5}, STRICT, "executionType"),
        ({"codeInputType": "Inline", "executionType": "Synchronous", "timeoutInSeconds": 5}, STRICT, "code"),
        ({"code": "1", "codeInputType": "Inline", "executionType": "Synchronous"}, STRICT, "timeoutInSeconds"),
        (
            {"code": "1", "codeInputType": 1, "executionType": "Synchronous", "timeoutInSeconds": 5},
            STRICT,
            "codeInputType",
        ),
        (
            {"code": "1", "codeInputType": "Inline", "executionType": "Synchronous", "timeoutInSeconds": "5"},
            STRICT,
            "timeoutInSeconds",
        ),
        (
            {"code": "1", "codeInputType": "Inline", "executionType": "Synchronous", "timeoutInSeconds": 5.5},
            STRICT,
            "timeoutInSeconds",
        ),
        ({"code": "1"}, NEWEST, "timeoutInSeconds"),
        ({"timeoutInSeconds": 5}, NEWEST, "code"),
        ({"code": "1", "timeoutInSeconds": 5, "useEmptyKernel": "yes"}, NEWEST, "useEmptyKernel"),
        (
            {"code": "1", "timeoutInSeconds": 5, "returnJupyterFormatExecutionResult": 1},
            NEWEST,
            "returnJupyterFormatExecutionResult",
        ),
        ({"code": "1", "timeoutInSeconds": 5, "outputStreamsMaxLength": -1}, NEWEST, "outputStreamsMaxLength"),
    ],
)
def test_execution_request_refusals_name_the_field(body, traits, field):
    with pytest.raises(EmulatorError) as info:
        wire.parse_execution_request(body, traits)
    assert info.value.status == 400 and info.value.target == field
    if field:
        assert field in info.value.message


def test_renderings_and_options_per_version():
    body = {"code": "1", "timeoutInSeconds": 5, "useEmptyKernel": True, "returnJupyterFormatExecutionResult": True}
    newest = wire.parse_execution_request(body, NEWEST)
    assert (newest.rendering, newest.empty_kernel) == ("jupyter", True)
    assert wire.parse_execution_request({"code": "1", "timeoutInSeconds": 5}, NEWEST).rendering == "json"
    alias = wire.parse_execution_request({"code": "1", "timeoutInSeconds": 5, "returnJupyterFormat": True}, NEWEST)
    assert alias.rendering == "jupyter"  # as two of the specification's examples spell it
    older = wire.parse_execution_request({**body, "codeInputType": "Inline", "executionType": "Synchronous"}, STRICT)
    assert (older.rendering, older.empty_kernel) == ("legacy", False)  # fields the version does not have


def test_status_codes_per_version():
    assert wire.execute_status_code(API_VERSIONS["2024-02-02-preview"]) == 200
    assert wire.execute_status_code(STRICT) == 202
    assert wire.execute_status_code(API_VERSIONS["2025-02-02-preview"]) == 200
    assert wire.execute_status_code(NEWEST) == 200
    assert wire.execute_status_code(NEWEST, asynchronous=True) == 202
    with pytest.raises(EmulatorError):
        wire.check_version("2023-01-01")


def test_fault_rule_parsing():
    rule = parse_rule("429:rate=0.5:retry_after=2:path=executions:method=post:count=3")
    assert (rule.kind, rule.status, rule.rate, rule.retry_after, rule.path, rule.count) == (
        "status",
        429,
        0.5,
        2.0,
        "executions",
        3,
    )
    assert parse_rule("drop:phase=after").phase == "after"
    assert parse_rule({"kind": 503}).status == 503
    assert [r.kind for r in parse_rules("delay:seconds=0.1; expire:count=1")] == ["delay", "expire"]
    assert parse_rules('[{"kind": "drop"}]')[0].kind == "drop"
    assert (parse_rule("full").kind, parse_rule("full:status=429").status) == ("full", 429)
    for bad in ("teapot", "429:rate=2", "429:colour=red", "429:rate", "200", "drop:phase=during", "full:status=500"):
        with pytest.raises(ValueError):
            parse_rule(bad)


def test_fault_injector_counts_and_filters():
    injector = FaultInjector(parse_rules("503:count=2:path=^executions$:method=POST"), seed=1)
    assert injector.pick("GET", "executions") == []
    assert injector.pick("POST", "files") == []
    assert len(injector.pick("POST", "executions")) == 1
    assert len(injector.pick("POST", "executions")) == 1
    assert injector.pick("POST", "executions") == []
    assert injector.snapshot()["fired"] == {"503": 2}


def test_fault_rate_is_seeded():
    picks = []
    for _ in range(2):
        injector = FaultInjector(parse_rules("429:rate=0.3"), seed=42)
        picks.append([bool(injector.pick("POST", "executions")) for _ in range(200)])
    assert picks[0] == picks[1]
    assert 30 < sum(picks[0]) < 90


def test_sandbox_choice_resolution(monkeypatch):
    from azure_sessions.emulator import tiers

    def probed(answer):
        return classmethod(lambda cls: answer)

    monkeypatch.setattr(tiers.BubblewrapTier, "problem", probed("the bwrap executable was not found on PATH"))
    monkeypatch.setattr(tiers.LandlockTier, "problem", probed("this kernel offers no Landlock"))
    tier = tiers.resolve_tier("auto")
    assert tier.name == "unisolated" and not tier.isolated
    assert "UNISOLATED" in tier.warning and "bwrap executable was not found" in tier.warning
    assert "Landlock is unavailable: this kernel offers no Landlock" in tier.warning
    with pytest.raises(tiers.SandboxUnavailable, match="not found"):
        tiers.resolve_tier("bubblewrap")
    with pytest.raises(tiers.SandboxUnavailable, match="no Landlock"):
        tiers.resolve_tier("landlock")
    with pytest.raises(tiers.SandboxUnavailable, match=r"no code is run.*AZURE_SESSIONS_POOL_ENDPOINT"):
        tiers.resolve_tier("auto", refuse_unisolated=True)
    assert tiers.resolve_tier("none").name == "unisolated"
    assert tiers.resolve_tier("none", refuse_unisolated=True).name == "unisolated"  # chosen on purpose
    monkeypatch.setattr(tiers.LandlockTier, "problem", probed(None))
    landlock = tiers.resolve_tier("auto")  # the second tier, when bubblewrap cannot start
    assert (landlock.name, landlock.label, landlock.isolated, landlock.warning) == ("landlock", "Landlock", True, None)
    monkeypatch.setattr(tiers.BubblewrapTier, "problem", probed(None))
    assert isinstance(tiers.resolve_tier("auto"), tiers.BubblewrapTier)
    assert isinstance(tiers.resolve_tier("landlock"), tiers.LandlockTier)
    with pytest.raises(ValueError):
        tiers.resolve_tier("docker")
    assert tiers.CHOICES == ("auto", "bubblewrap", "landlock", "none")  # what settings and the CLI accept


def _worker_config():
    from azure_sessions.emulator.inside import protocol

    return protocol.WorkerConfig(
        uid=None, gid=None, limits=protocol.Rlimits(memory_bytes=1 << 30, cpu_seconds=60, max_processes=None,
        file_size_bytes=None, core_bytes=0), nice=10, data_dir="/mnt/data", max_stream_bytes=1 << 20,
        max_result_chars=1000, max_image_bytes=1 << 20, whole_pid_namespace=False, namespaces=None, path_mapping=None,
        policy=protocol.Policy(tier="landlock", sockets=False, sysv_ipc=False, guard_signals=True, protected_pids=[1, 2],
                               supervised=False),
        confinement=protocol.Confinement(read_only=["/usr"], read_write=["/srv/s"], devices=["/dev/null"]),
    )  # fmt: skip


def _without(fields: dict, key: str) -> dict:
    return {k: v for k, v in fields.items() if k != key}


def test_the_worker_configuration_round_trips_and_fails_loudly_on_a_wrong_key():
    from azure_sessions.emulator.inside import protocol

    config = _worker_config()
    fields = protocol.to_dict(config)
    assert protocol.from_json(protocol.WorkerConfig, protocol.to_json(config)) == config
    for broken, says in (
        (_without(fields, "confinement"), "missing confinement"),  # Landlock is not skipped
        ({**fields, "confine": fields["confinement"]}, "unknown confine"),
        (
            {**fields, "confinement": {**_without(fields["confinement"], "read_write"), "read_writ": []}},
            "confinement: missing read_write; unknown read_writ",
        ),
        ({**fields, "max_stream_bytes": True}, "max_stream_bytes: expected int, got bool"),
        ({**fields, "limits": {**fields["limits"], "cpu_seconds": "60"}}, "limits.cpu_seconds"),
        ({**fields, "policy": {**fields["policy"], "protected_pids": "1,2"}}, "expected a list"),
    ):
        with pytest.raises(protocol.ProtocolError, match=says):
            protocol.from_dict(protocol.WorkerConfig, broken)


def test_messages_are_framed_once_and_decoded_strictly_by_direction():
    from azure_sessions.emulator.inside import protocol

    messages = [protocol.Ready(pid=7, python="3.11", prefix="/venv", ipython="8", policy=None, confined=None),
                protocol.Output(id="a", stream="stdout", text="héllo\n"),
                protocol.Result(id="a", ok=True, stdout="héllo\n", stderr="", result={"type": "image"}, duration_ms=3,
                                interrupted=False, ended_processes=0)]  # fmt: skip
    data = b"".join(protocol.frame(m) for m in messages)
    reader = protocol.FrameReader(protocol.FROM_WORKER)
    got = []
    for i in range(0, len(data), 7):  # as a pipe delivers it: in pieces
        reader.feed(data[i : i + 7])
        while (message := reader.next()) is not None:
            got.append(message)
    assert got == messages
    fork = protocol.Fork(id=1, config=_worker_config(), env={"HOME": "/tmp"})
    assert protocol.decode(protocol.encode(fork), protocol.TO_TEMPLATE) == fork
    with pytest.raises(protocol.ProtocolError, match="unexpected op 'exec'"):  # a worker never sends one
        protocol.decode(
            protocol.encode(
                protocol.Exec(id="a", code="1", live_output=False, render="legacy", empty_namespace=False)
            ),
            protocol.FROM_WORKER,
        )
    with pytest.raises(protocol.ProtocolError, match="unexpected op 'execute'"):
        protocol.decode(b'{"op": "execute", "id": "a"}', protocol.TO_WORKER)
    with pytest.raises(protocol.ProtocolError, match="exec: unknown cod"):
        protocol.decode(
            b'{"op": "exec", "id": "a", "cod": "1", "code": "1", "live_output": false, "render": "legacy", '
            b'"empty_namespace": false}',
            protocol.TO_WORKER,
        )
    reader.feed(protocol.HEADER.pack(protocol.MAX_FRAME + 1))
    with pytest.raises(protocol.FrameTooLarge):
        reader.next()


def test_a_missing_landlock_names_the_layer_that_refuses_it_and_what_to_do():
    from errno import ENOSYS, EOPNOTSUPP, EPERM

    from azure_sessions.emulator.inside.confine import explain_missing_landlock as explain

    lsms = ["lockdown", "capability", "landlock", "yama", "apparmor"]
    # a container's seccomp profile on a kernel that has Landlock: the profile, not the kernel
    for error, known in ((ENOSYS, lsms), (EPERM, lsms), (EPERM, None)):
        why = explain(error, lsms=known, seccomp=2, release="6.12.0-1-amd64")
        assert why.startswith("the seccomp profile this process runs under (a container's) refuses"), why
        assert "landlock_restrict_self in the container's seccomp profile" in why and "offers no" not in why
    # refused under a filter, nothing else known (securityfs is not mounted in most containers): most likely it
    probable = explain(ENOSYS, lsms=None, seccomp=2, release="6.12.0-1-amd64")
    assert "most likely the container's seccomp profile" in probable and "built without Landlock" in probable
    # the kernel
    disabled = explain(EOPNOTSUPP, lsms=["capability", "apparmor"], seccomp=2, release="6.12.0")
    assert "built in but not enabled (its LSMs: capability,apparmor): add landlock to the lsm= boot" in disabled
    unlisted = explain(ENOSYS, lsms=["capability", "apparmor"], seccomp=0, release="6.1.0")
    assert "does not run Landlock (its LSMs: capability,apparmor)" in unlisted and "seccomp" not in unlisted
    assert "predates Landlock (Linux 5.13)" in explain(ENOSYS, lsms=None, seccomp=2, release="5.10.0-28-amd64")
    bare = explain(ENOSYS, lsms=None, seccomp=0, release="6.5.0")
    assert bare.startswith("this kernel (Linux 6.5.0) offers no Landlock") and "no seccomp filter" in bare


def test_the_worker_knows_every_rendering_an_api_version_asks_for():
    from azure_sessions.dialects import API_VERSIONS, RENDER_JSON, RENDER_JUPYTER, RENDER_LEGACY
    from azure_sessions.emulator.inside import protocol

    assert (RENDER_LEGACY, RENDER_JSON, RENDER_JUPYTER) == protocol.RENDERINGS
    assert {traits.rendering for traits in API_VERSIONS.values()} <= set(protocol.RENDERINGS)
