"""What `meshworker up` leaves on the local machine for other users to reach (issue 12)."""

from __future__ import annotations

import pytest

from services import cli
from services.common.config import load
from services.common.statefile import StateError


def test_a_runtime_dir_outside_the_state_dir_is_made_0700(tmp_path):
    # L4: with runtime_dir outside the state dir, run/ was 0755 (mkdir's mode is not given to
    # parents) and another user reached a backend's socket directly.
    runtime = tmp_path / "elsewhere" / "run"
    cfg = load({"MESHWORKER_STATE_DIR": str(tmp_path / "state"), "MESHWORKER_RUNTIME_DIR": str(runtime)})

    cli.prepare_runtime(cfg)

    assert runtime.stat().st_mode & 0o777 == 0o700
    assert (runtime / "programs").stat().st_mode & 0o777 == 0o700


def test_an_existing_open_runtime_dir_of_ours_is_tightened(tmp_path):
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o755)
    runtime.chmod(0o755)
    cfg = load({"MESHWORKER_STATE_DIR": str(tmp_path / "state"), "MESHWORKER_RUNTIME_DIR": str(runtime)})

    cli.prepare_runtime(cfg)

    assert runtime.stat().st_mode & 0o777 == 0o700


def test_a_shared_runtime_dir_is_refused_not_closed(tmp_path):
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: closing it would break everyone else
    cfg = load({"MESHWORKER_STATE_DIR": str(tmp_path / "state"), "MESHWORKER_RUNTIME_DIR": str(shared)})

    with pytest.raises(StateError, match=f"{shared}.*runtime_dir"):
        cli.prepare_runtime(cfg)
    assert shared.stat().st_mode & 0o7777 == 0o1777
