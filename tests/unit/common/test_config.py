"""Tests for services.common.config.load: defaults, TOML, env overrides, and errors that name the key."""

from __future__ import annotations

import socket

import pytest

from services import cli
from services.common.config import ConfigError, ServiceConfig, load
from services.common.models import Model


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {"MESHWORKER_STATE_DIR": str(tmp_path)}


def write_toml(tmp_path, text: str, name: str = "meshworker.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_with_only_a_state_dir(env, tmp_path):
    cfg = load(env)

    assert cfg.worker_id == socket.gethostname()
    assert (cfg.gateway_port, cfg.dht_port, cfg.nebula_port) == (8000, 8468, 4242)
    assert cfg.state_dir == tmp_path
    assert cfg.runtime_dir == tmp_path / "run"
    assert cfg.config_path is None
    assert cfg.dht_seeds == ()
    assert cfg.log_level == "INFO"
    assert cfg.services == tuple(ServiceConfig(
        name=name, upstream=f"unix:{tmp_path}/run/svc-{name}.sock",
        command=("meshworker", "run", f"svc-{name}"), idempotent=True, reuse_connections=True)
        for name in ("vision-ocr", "rag-embeddings", "llm-inference"))
    assert cfg.unavailable == ()


def test_toml_file_in_state_dir_is_read(env, tmp_path):
    write_toml(tmp_path, 'worker_id = "box-1"\ngateway_port = 9000\nlog_level = "debug"\n')

    cfg = load(env)

    assert cfg.config_path == tmp_path / "meshworker.toml"
    assert (cfg.worker_id, cfg.gateway_port, cfg.log_level) == ("box-1", 9000, "DEBUG")


def test_explicit_config_path_and_env_var_both_work(env, tmp_path):
    path = write_toml(tmp_path, "dht_port = 9468\n", name="other.toml")

    assert load(env, config_path=path).dht_port == 9468
    assert load({**env, "MESHWORKER_CONFIG": path}).dht_port == 9468


def test_env_overrides_toml(env, tmp_path):
    write_toml(tmp_path, 'gateway_port = 9000\nworker_id = "from-file"\n')

    cfg = load({**env, "MESHWORKER_GATEWAY_PORT": "9100"})

    assert cfg.gateway_port == 9100
    assert cfg.worker_id == "from-file"


def test_services_comma_list_with_service_tables(env, tmp_path):
    write_toml(tmp_path, """
[service.echo]
url = "http://127.0.0.1:9001/"
health_path = "/ready"
timeout_s = 5
command = "python -m echo --greeting 'hi there'"
""")

    cfg = load({**env, "MESHWORKER_SERVICES": " vision-ocr , echo,"})

    assert [s.name for s in cfg.services] == ["vision-ocr", "echo"]
    echo = cfg.service("echo")
    assert echo.upstream == "http://127.0.0.1:9001"
    assert echo.health_path == "/ready"
    assert echo.timeout_s == 5.0
    assert echo.command == ("python", "-m", "echo", "--greeting", "hi there")
    assert echo.program == "svc-echo"


def test_services_list_in_toml(env, tmp_path):
    write_toml(tmp_path, 'services = ["api"]\n[service.api]\nurl = "unix:/tmp/api.sock"\n')

    cfg = load(env)

    assert cfg.services == (ServiceConfig(name="api", upstream="unix:/tmp/api.sock"),)


def test_dht_seeds_parsed_into_host_port_pairs(env):
    assert load({**env, "MESHWORKER_DHT_SEEDS": "a:1,b:2"}).dht_seeds == (("a", 1), ("b", 2))


def test_runtime_dir_override(env, tmp_path):
    cfg = load({**env, "MESHWORKER_RUNTIME_DIR": str(tmp_path / "sockets")})

    assert cfg.runtime_dir == tmp_path / "sockets"
    assert cfg.services[0].upstream == f"unix:{tmp_path}/sockets/svc-vision-ocr.sock"


def test_grpc_target_unix_by_default(env, tmp_path):
    assert load(env).grpc_target("router") == f"unix:{tmp_path}/run/router.sock"


def test_grpc_over_tcp_is_refused_naming_the_key(env, tmp_path):
    # M7 (issue 12): with grpc_tcp_base_port set, components listened on loopback TCP with no
    # auth, and any local user (nobody) called Router/Drain. The option is gone; setting it
    # stops start-up with the reason instead of quietly serving elsewhere than asked.
    with pytest.raises(ConfigError, match="grpc_tcp_base_port.*unix sockets"):
        load({**env, "MESHWORKER_GRPC_TCP_BASE_PORT": "50000"})
    with pytest.raises(ConfigError, match="grpc_tcp_base_port.*unix sockets"):
        load(env, write_toml(tmp_path, "grpc_tcp_base_port = 50000\n"))


@pytest.mark.parametrize("extra, key, form", [
    ({"MESHWORKER_GATEWAY_PORT": "abc"}, "gateway_port", "integer from 0 to 65535"),
    ({"MESHWORKER_GATEWAY_PORT": "70000"}, "gateway_port", "integer from 0 to 65535"),
    ({"MESHWORKER_LOG_LEVEL": "LOUD"}, "log_level", "DEBUG, INFO, WARNING, ERROR"),
    ({"MESHWORKER_DHT_SEEDS": "a:1,nohost"}, "dht_seeds", "host:port"),
    ({"MESHWORKER_SERVICES": "mystery"}, "service.mystery", 'url = "http://host:port"'),
    ({"MESHWORKER_SERVICES": "Bad_Name"}, "services", "a-z, 0-9, '-'"),
    ({"MESHWORKER_CLIENT_AUTH": "none"}, "client_auth", "one of keys, open"),
    ({"MESHWORKER_CLIENT_AUTH_LOOPBACK": "maybe"}, "client_auth_loopback", "true or false"),
])
def test_bad_env_value_names_key_and_form(env, extra, key, form):
    with pytest.raises(ConfigError) as caught:
        load({**env, **extra})

    assert caught.value.key == key
    assert key in str(caught.value)
    assert form in str(caught.value)


@pytest.mark.parametrize("toml, key, form", [
    ('services = ["x"]\n[service.x]\nurl = "ftp://x"\n', "service.x.url", "http://host:port or unix:/path"),
    ("gatway_port = 8000\n", "gatway_port", "unknown key"),
    ('services = ["x"]\n[service.x]\nurl = "http://x:1"\nmodels = ["bad id"]\n', "service.x.models", "model id"),
    ('services = ["x"]\n[service.x]\nurl = "http://x:1"\nmodels = [{id = "m", kind = "tts"}]\n',
     "service.x.models", "kind = chat | completion | embedding"),
    ('services = []\n[models]\n"same" = "same"\n', "models.same", "two different ids"),
    ("gateway_port = = 1\n", "config", "not valid TOML"),
])
def test_bad_toml_names_key_and_form(env, tmp_path, toml, key, form):
    write_toml(tmp_path, toml)

    with pytest.raises(ConfigError) as caught:
        load(env)

    assert caught.value.key == key
    assert key in str(caught.value)
    assert form in str(caught.value)


def test_unreadable_explicit_config_path(env, tmp_path):
    missing = tmp_path / "missing.toml"

    with pytest.raises(ConfigError) as caught:
        load(env, config_path=str(missing))

    assert caught.value.key == "config"
    assert f"cannot read {missing}" in str(caught.value)


def test_cli_exits_2_with_message_naming_the_key(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("MESHWORKER_CONFIG", raising=False)
    monkeypatch.setenv("MESHWORKER_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("MESHWORKER_GATEWAY_PORT", "abc")

    assert cli.main(["status"]) == 2

    err = capsys.readouterr().err
    assert "gateway_port" in err
    assert "'abc'" in err


def test_models_of_a_service_and_aliases_of_the_mesh(env, tmp_path):
    write_toml(tmp_path, 'services = ["mine"]\n[models]\n"gpt-4o-mini" = "smol"\n[service.mine]\n'
                         'url = "http://127.0.0.1:9"\nmodels = ["a", {id = "e", kind = "embedding", context_length = 256}]\n')
    cfg = load(env)
    assert cfg.aliases == (("gpt-4o-mini", "smol"),)
    assert cfg.services[0].models == (Model("a"), Model("e", "embedding", 256))
    assert load({**env, "MESHWORKER_MODELS": "x=y, z=w"}).aliases == (("x", "y"), ("z", "w"))


def test_a_service_without_models_asks_its_backend(env, tmp_path):
    write_toml(tmp_path, 'services = ["mine"]\n[service.mine]\nurl = "http://127.0.0.1:9"\n')
    assert load(env).services[0].models == () and load(env).aliases == ()


def test_who_may_call_the_node_is_keys_with_loopback_exempt_unless_said(env, tmp_path):
    cfg = load(env)
    assert (cfg.client_auth, cfg.client_auth_loopback) == ("keys", True)
    cfg = load({**env, "MESHWORKER_CLIENT_AUTH": "open", "MESHWORKER_CLIENT_AUTH_LOOPBACK": "false"})
    assert (cfg.client_auth, cfg.client_auth_loopback) == ("open", False)


def test_a_user_service_gets_one_request_per_connection_unless_it_says_it_reads_every_body(env, tmp_path):
    write_toml(tmp_path, 'services = ["a", "b"]\n[service.a]\nurl = "http://x:1"\n'
                         '[service.b]\nurl = "http://x:2"\nreuse_connections = true\n')
    assert [s.reuse_connections for s in load(env).services] == [False, True]
