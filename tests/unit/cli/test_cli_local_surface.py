"""What `meshworker up` leaves on the local machine for other users to reach (issue 12)."""

from __future__ import annotations

import os

import pytest

from services.cli import node as cli_node
from services.common.config import ConfigError, load
from services.common.statefile import StateError


def test_a_runtime_dir_outside_the_state_dir_is_made_0700(tmp_path):
    # L4: with runtime_dir outside the state dir, run/ was 0755 (mkdir's mode is not given to
    # parents) and another user reached a backend's socket directly.
    runtime = tmp_path / "elsewhere" / "run"
    cfg = load({"MESHWORKER_STATE_DIR": str(tmp_path / "state"), "MESHWORKER_RUNTIME_DIR": str(runtime)})

    cli_node.prepare_runtime(cfg)

    assert runtime.stat().st_mode & 0o777 == 0o700
    assert (runtime / "programs").stat().st_mode & 0o777 == 0o700


def test_an_existing_open_runtime_dir_of_ours_is_tightened(tmp_path):
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o755)
    runtime.chmod(0o755)
    cfg = load({"MESHWORKER_STATE_DIR": str(tmp_path / "state"), "MESHWORKER_RUNTIME_DIR": str(runtime)})

    cli_node.prepare_runtime(cfg)

    assert runtime.stat().st_mode & 0o777 == 0o700


def test_a_shared_runtime_dir_is_refused_not_closed(tmp_path):
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: closing it would break everyone else
    cfg = load({"MESHWORKER_STATE_DIR": str(tmp_path / "state"), "MESHWORKER_RUNTIME_DIR": str(shared)})

    with pytest.raises(StateError, match=f"{shared}.*runtime_dir"):
        cli_node.prepare_runtime(cfg)
    assert shared.stat().st_mode & 0o7777 == 0o1777


SECRET = "s3cret-of-the-mesh-" + "x" * 16


def test_children_never_get_the_mesh_secret_and_still_read_it(tmp_path, monkeypatch):
    # L5: every child of `meshworker up`, backends included, got MESHWORKER_MESH_SECRET in its
    # environment. Now the secret goes to <state>/mesh.secret (0600), where config reads it.
    monkeypatch.setenv("MESHWORKER_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("MESHWORKER_MESH_SECRET", SECRET)
    monkeypatch.setattr(cli_node.shutil, "which", lambda name, path=None: "/bin/supervisord")
    handed: dict[str, str] = {}

    def execve(path, argv, env):
        handed.update(env)
        raise SystemExit(0)
    monkeypatch.setattr(cli_node.os, "execve", execve)

    with pytest.raises(SystemExit):
        cli_node.up(load(dict(os.environ)))

    assert handed and "MESHWORKER_MESH_SECRET" not in handed and SECRET not in handed.values()
    assert handed["MESHWORKER_STATE_DIR"] == str(tmp_path)
    assert (tmp_path / "mesh.secret").stat().st_mode & 0o777 == 0o600
    assert load(handed).mesh_secret == SECRET  # what every program re-reads


def test_a_secret_in_the_config_file_that_the_variable_contradicts_is_refused(tmp_path):
    toml = tmp_path / "meshworker.toml"
    toml.write_text(f'mesh_secret = "{"other-secret-" + "y" * 16}"\n')
    environ = {"MESHWORKER_STATE_DIR": str(tmp_path), "MESHWORKER_MESH_SECRET": SECRET}
    cfg = load(environ, str(toml))

    with pytest.raises(ConfigError, match="mesh_secret"):
        cli_node.child_environment(cfg, environ)
