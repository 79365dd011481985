"""Server settings (flags, WINNOW_* variables, model specs), the API key, CORS, the missing extra and
``winnow serve`` as a real process stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")

from winnow.cli import build_parser
from winnow.errors import ConfigError, MissingExtraError
from winnow.server.commands import build_config
from winnow.server.config import ModelSpec, ServerConfig, settings
from winnow.server.guards import bearer_matches
from winnow.server.testing import running_server


@pytest.mark.parametrize(
    ("spec", "alias", "kind", "model"),
    [
        ("org/model", "org/model", None, "org/model"),
        ("cross-encoder:org/model", "cross-encoder:org/model", "cross-encoder", "org/model"),
        ("fast=cross-encoder:org/model", "fast", "cross-encoder", "org/model"),
        ("fast=/models/x", "fast", None, "/models/x"),
        ("/models/a=b", "/models/a=b", None, "/models/a=b"),  # not an alias: has a slash
        ("rerank:org/m", "rerank:org/m", None, "org/m"),
    ],
)
def test_model_spec_parsing(spec, alias, kind, model):
    assert ModelSpec.parse(spec) == ModelSpec(alias=alias, model=model, kind=kind)


def test_settings_from_environment_then_flags():
    env = {
        "WINNOW_MODELS": "a=cross-encoder:/m/a, b=/m/b",
        "WINNOW_PORT": "9001",
        "WINNOW_HOST": "0.0.0.0",
        "WINNOW_API_KEY": "secret",
        "WINNOW_MAX_DOCUMENTS": "7",
        "WINNOW_MAX_WAIT_MS": "1.5",
        "WINNOW_CORS_ORIGINS": "https://a.example,https://b.example",
    }
    config = ServerConfig.from_env(env)
    assert [m.alias for m in config.models] == ["a", "b"]
    assert config.models[0].kind == "cross-encoder" and config.default_model == "a"
    assert (config.port, config.host, config.api_key) == (9001, "0.0.0.0", "secret")
    assert config.max_documents == 7 and config.max_wait_ms == 1.5
    assert config.cors_origins == ("https://a.example", "https://b.example")

    args = build_parser().parse_args(
        ["serve", "--model", "c=/m/c", "--port", "9002", "--max-queue", "3"]
    )
    config = build_config(args, env)
    assert [m.alias for m in config.models] == ["c"]
    assert (config.port, config.max_queue, config.max_documents) == (9002, 3, 7)
    assert config.host == "0.0.0.0"


def test_defaults_bind_to_localhost():
    config = build_config(build_parser().parse_args(["serve", "--model", "m"]), {})
    assert config.host == "127.0.0.1" and config.port == 8080 and config.api_key is None
    assert config.cors_origins == ()


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"WINNOW_PORT": "eighty"}, "WINNOW_PORT"),
        ({"WINNOW_MAX_QUEUE": "0"}, "max_queue"),
        ({"WINNOW_MODELS": "a=/x,a=/y"}, "repeated: a"),
        ({"WINNOW_PORT": "70000"}, "port"),
    ],
)
def test_bad_settings_name_the_setting(env, needle):
    with pytest.raises(ConfigError, match=needle):
        ServerConfig.from_env(env)


def _serve_parser():
    import argparse

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["serve"]


def test_every_setting_has_a_variable_and_a_flag():
    serve = _serve_parser()
    flags = {opt: action for action in serve._actions for opt in action.option_strings}
    table = {s.name: s for s in settings()}
    assert list(table) == [f.name for f in fields(ServerConfig)]
    for f in fields(ServerConfig):
        s = table[f.name]
        assert s.env == "WINNOW_" + f.name.upper()
        assert s.flag in flags, f"no flag for {f.name}"
        assert flags[s.flag].dest == f.name
        assert s.env in flags[s.flag].help and "default:" in flags[s.flag].help
        assert s.help and s.help != f.name.replace("_", " "), f"{f.name} has no help"
    epilog = serve.format_help()
    for s in table.values():
        assert s.env in epilog
    assert (table["models"].flag, table["cors_origins"].flag) == ("--model", "--cors-origin")


def _sample(s):
    """A value of the setting's type that differs from its default."""
    if s.name == "models":
        return (
            ModelSpec.parse("a=llm-pointwise:/m/a?max_query_length=8&instruction=x%2Cy%26z"),
            ModelSpec.parse("llm:qwen3:0.6b?backend=ollama"),
        )
    if s.name == "ready_when":  # one of READY_POLICIES
        return "any"
    if s.name == "fallbacks":  # a fallback names a served model
        return (ModelSpec.parse_fallback("a=cross-encoder:/m/small?max_length=128"),)
    if s.repeatable:
        return ("https://a.example", "https://b.example")
    if s.item_type is bool:
        return not s.default
    if s.item_type is int:
        return 64 if not s.default else s.default * 2
    if s.item_type is float:
        return 2.5 if not s.default else s.default * 2
    return f"{s.name}-value"


def test_each_variable_and_flag_round_trips():
    table = settings()
    values = {s.name: _sample(s) for s in table}
    env = {s.env: s.format(values[s.name]) for s in table}
    config = ServerConfig.from_env(env)
    for s in table:
        assert getattr(config, s.name) == values[s.name], s.env
    argv = ["serve"]
    for s in table:
        value = values[s.name]
        if s.repeatable:
            for item in value:
                argv += [s.flag, s.format_one(item)]
        elif s.item_type is bool:
            argv.append(s.flag if value else "--no-" + s.flag[2:])
        else:
            argv += [s.flag, s.format(value)]
    config = build_config(build_parser().parse_args(argv), {})
    for s in table:
        assert getattr(config, s.name) == values[s.name], s.flag


def test_bad_values_name_the_variable_or_the_flag(capsys):
    with pytest.raises(
        ConfigError, match=r"WINNOW_MAX_QUEUE='abc' is not valid: expected an integer"
    ):
        ServerConfig.from_env({"WINNOW_MAX_QUEUE": "abc"})
    with pytest.raises(
        ConfigError, match=r"WINNOW_MAX_WAIT_MS='soon' is not valid: expected a num"
    ):
        ServerConfig.from_env({"WINNOW_MAX_WAIT_MS": "soon"})
    with pytest.raises(ConfigError, match=r"WINNOW_MODELS: model spec 'a=/m\?max_query_len=8'"):
        ServerConfig.from_env({"WINNOW_MODELS": "a=/m?max_query_len=8"})
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--max-queue", "abc"])
    assert (
        "argument --max-queue: 'abc' is not valid: expected an integer" in capsys.readouterr().err
    )


def test_boolean_settings_are_parsed_strictly():
    """No ServerConfig field is a bool yet; a dataclass like it shows how one is read."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class WithSwitch(ServerConfig):
        #: warm the models up before /ready says yes
        warmup: bool = True

    switch = {s.name: s for s in settings(WithSwitch)}["warmup"]
    assert (switch.env, switch.flag, switch.help) == (
        "WINNOW_WARMUP",
        "--warmup",
        "warm the models up before /ready says yes",
    )
    for text, value in [("1", True), ("yes", True), ("TRUE", True), ("0", False), ("no", False)]:
        assert switch.convert(text, switch.env) is value
    for text in ("maybe", "2", "y"):
        with pytest.raises(ConfigError, match=f"WINNOW_WARMUP='{text}' is not valid: expected one"):
            switch.convert(text, switch.env)
    assert switch.convert(switch.format(False), switch.env) is False


def test_serve_without_a_model_is_an_error():
    with pytest.raises(ConfigError, match="--model"):
        build_config(build_parser().parse_args(["serve"]), {})


def test_missing_server_extra_names_the_pip_command(monkeypatch):
    import winnow.server

    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(MissingExtraError, match=r"winnow\[server\]"):
        winnow.server.require_server_extra()
    with pytest.raises(MissingExtraError, match=r"winnow\[server\]"):
        winnow.server.create_app  # noqa: B018


def test_bearer_matching():
    assert bearer_matches("Bearer k3y", "k3y")
    assert bearer_matches("bearer k3y", "k3y")
    assert not bearer_matches("Bearer k3", "k3y")
    assert not bearer_matches("Basic k3y", "k3y")
    assert not bearer_matches(None, "k3y")
    assert not bearer_matches("Bearer ключ", "k3y")


def test_api_key_guards_everything_but_health(tiny_bert):
    config = ServerConfig(models=(ModelSpec.parse(tiny_bert),), api_key="s3cret")
    good = {"Authorization": "Bearer s3cret"}
    with running_server(config) as srv:
        assert httpx.get(srv.url + "/health").status_code == 200
        payload = {"query": "q", "documents": ["d"]}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            r = httpx.post(srv.url + "/v1/rerank", json=payload, headers=headers)
            assert r.status_code == 401
            assert r.headers["WWW-Authenticate"] == "Bearer"
            assert r.json()["error_type"] == "unauthorized"
        for path in ("/ready", "/metrics", "/v1/models", "/openapi.json", "/docs"):
            assert httpx.get(srv.url + path).status_code == 401
            assert httpx.get(srv.url + path, headers=good).status_code == 200
        r = httpx.post(srv.url + "/v1/rerank", json=payload, headers=good)
        assert r.status_code == 200
        r = httpx.post(srv.url + "/rerank", json={"query": "q", "texts": ["d"]}, headers=good)
        assert r.status_code == 200


def test_cors_is_off_unless_configured(tiny_bert):
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    config = ServerConfig(models=(ModelSpec.parse(tiny_bert),))
    with running_server(config) as srv:
        r = httpx.options(srv.url + "/v1/rerank", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
    config = ServerConfig(
        models=(ModelSpec.parse(tiny_bert),), cors_origins=("https://app.example",)
    )
    with running_server(config) as srv:
        r = httpx.options(srv.url + "/v1/rerank", headers=preflight)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        r = httpx.options(
            srv.url + "/v1/rerank", headers={**preflight, "Origin": "https://x.example"}
        )
        assert r.headers.get("access-control-allow-origin") != "https://x.example"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_winnow_serve_process_stops_cleanly_on_sigterm(tiny_bert):
    """The real command: starts from WINNOW_* variables, serves, shuts down cleanly on SIGTERM.

    uvicorn re-raises the signal once its shutdown is complete, so the exit status is -SIGTERM."""
    port = _free_port()
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {
        **os.environ,
        "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "WINNOW_MODELS": f"tiny={tiny_bert}",
        "WINNOW_PORT": str(port),
        "WINNOW_MAX_WAIT_MS": "2",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "winnow.cli", "serve", "--log-level", "info"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        r = httpx.post(url + "/v1/rerank", json={"query": "wing", "documents": ["a", "b"]})
        assert r.status_code == 200 and r.json()["model"] == "tiny"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) in (0, -signal.SIGTERM)
        log = proc.stdout.read().decode()
        assert "Application shutdown complete" in log
        assert "Traceback" not in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_winnow_serve_exits_when_no_model_loads(tmp_path):
    """With every model failed there is nothing to serve: the command stops with the reasons."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    missing = tmp_path / "no-such-model"
    done = subprocess.run(
        [sys.executable, "-m", "winnow.cli", "serve", "--model", f"a={missing}", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert (
        f"winnow serve: error: no model could be loaded: a: ModelLoadError: model folder '{missing}'"
        in done.stderr
    )
    # the log keeps the load error's traceback (after its retries); the final error line does not
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("winnow serve: error: no model could be loaded: a: ModelLoadError")
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stderr.count("failed to load (try") == 2  # three tries: the default 2 retries


@pytest.mark.parametrize("key", ["", "   ", "\t\n"])
def test_an_empty_api_key_is_refused_not_read_as_no_key(key):
    """``--api-key "$KEY"`` with KEY unset would otherwise serve everything without auth."""
    with pytest.raises(ConfigError, match="api_key is empty"):
        ServerConfig(models=(ModelSpec.parse("m"),), api_key=key)
    with pytest.raises(ConfigError, match="api_key is empty"):
        ServerConfig.from_env({"WINNOW_MODELS": "m", "WINNOW_API_KEY": key})
    args = build_parser().parse_args(["serve", "--model", "m", "--api-key", key])
    with pytest.raises(ConfigError, match="api_key is empty"):
        build_config(args, {})


def test_an_api_key_is_stripped_as_the_bearer_token_is():
    config = ServerConfig.from_env({"WINNOW_MODELS": "m", "WINNOW_API_KEY": " s3cret\n"})
    assert config.api_key == "s3cret"
    assert bearer_matches("Bearer s3cret ", config.api_key)


def test_load_ready_and_fallback_settings():
    env = {
        "WINNOW_MODELS": "a=/m/a,b=/m/b",
        "WINNOW_LOAD_RETRIES": "4",
        "WINNOW_LOAD_BACKOFF": "0.5",
        "WINNOW_READY_WHEN": "any",
        "WINNOW_FALLBACKS": "a=cross-encoder:/m/small",
        "WINNOW_DEVICE_FALLBACK": "yes",
    }
    config = ServerConfig.from_env(env)
    assert (config.load_retries, config.load_backoff, config.ready_when) == (4, 0.5, "any")
    assert config.fallbacks == (ModelSpec("a", "/m/small", "cross-encoder"),)
    assert config.fallback_for("a").model == "/m/small" and config.fallback_for("b") is None
    assert config.device_fallback is True
    defaults = ServerConfig()
    assert (defaults.load_retries, defaults.ready_when, defaults.device_fallback) == (
        2,
        "all",
        False,
    )
    args = build_parser().parse_args(
        [
            "serve",
            "--model",
            "a=/m/a",
            "--fallback",
            "a=/m/tiny",
            "--ready-when",
            "all",
            "--load-retries",
            "0",
            "--device-fallback",
        ]
    )
    config = build_config(args, env)
    assert config.fallbacks == (ModelSpec("a", "/m/tiny"),) and config.ready_when == "all"
    assert config.load_retries == 0 and config.device_fallback is True


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"WINNOW_READY_WHEN": "some"}, "ready_when must be one of all, any"),
        ({"WINNOW_LOAD_RETRIES": "-1"}, "load_retries"),
        ({"WINNOW_FALLBACKS": "/m/small"}, "is not NAME=\\[KIND:\\]MODEL"),
        ({"WINNOW_FALLBACKS": "zz=/m/small"}, "no served model has that name; served: a"),
        ({"WINNOW_FALLBACKS": "a=/x,a=/y"}, "more than one fallback"),
        ({"WINNOW_DEVICE_FALLBACK": "maybe"}, "WINNOW_DEVICE_FALLBACK"),
    ],
)
def test_bad_load_settings_name_the_setting(env, needle):
    with pytest.raises(ConfigError, match=needle):
        ServerConfig.from_env({"WINNOW_MODELS": "a=/m/a", **env})
