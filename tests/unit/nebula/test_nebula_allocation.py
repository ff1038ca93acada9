"""The address table: pure rules, enrollment without spending addresses on refusals, and
concurrent enrollments from threads and processes never sharing an address."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from authority_fixture import FAR_FUTURE, fake_signer

from services.nebula.authority import allocation, holder, tokens
from services.nebula.authority.holder import JoinRequest
from services.nebula.overlay.state import EnrollmentError, StateError

PUB = "-----BEGIN NEBULA X25519 PUBLIC KEY-----\n" + "A" * 43 + "=\n-----END NEBULA X25519 PUBLIC KEY-----\n"
NOW = time.time()


def table(*ips: str, expires: int = FAR_FUTURE, revoked: bool = False) -> dict:
    result: dict = {}
    for ip in ips:
        result = allocation.assign(result, ip, f"n-{ip}", f"fp-{ip}", expires)
        result[ip]["revoked"] = revoked
    return result


def test_first_free_host_address():
    assert allocation.next_free({}, "10.42.0.0/16", NOW) == "10.42.0.1"
    assert allocation.next_free(table("10.42.0.1", "10.42.0.2"), "10.42.0.0/16", NOW) == "10.42.0.3"


def test_revoked_but_unexpired_addresses_are_not_reused_expired_ones_are():
    assert allocation.next_free(table("10.42.0.1", revoked=True), "10.42.0.0/16", NOW) == "10.42.0.2"
    assert allocation.next_free(table("10.42.0.1", expires=int(NOW) - 1), "10.42.0.0/16", NOW) == "10.42.0.1"


def test_a_full_network_is_a_clear_refusal():
    with pytest.raises(EnrollmentError, match="every address of 10.42.0.0/30"):
        allocation.next_free(table("10.42.0.1", "10.42.0.2"), "10.42.0.0/30", NOW)


def test_revoke_marks_the_named_node_and_refuses_unknown_names():
    revoked, fingerprint = allocation.revoke(table("10.42.0.1", "10.42.0.2"), "n-10.42.0.2", NOW)

    assert fingerprint == "fp-10.42.0.2" and revoked["10.42.0.2"]["revoked"]
    assert allocation.holder(revoked, "n-10.42.0.2", NOW) is None
    with pytest.raises(LookupError):
        allocation.revoke(revoked, "n-10.42.0.2", NOW)


def test_corrupt_table_is_a_clear_error(tmp_path):
    path = tmp_path / "allocations.json"
    path.write_text(json.dumps({"version": 1, "hosts": {"10.42.0.1": {"name": "x"}}}))

    with pytest.raises(StateError, match="address table .* is corrupt"):
        allocation.load(path)


def request(token: str, name: str, **extra) -> JoinRequest:
    return JoinRequest(token=token, name=name, public_key=PUB, **extra)


def snapshot(paths) -> tuple[str, str]:
    return paths.allocations.read_text(), paths.tokens.read_text()


def test_enrollment_takes_the_next_address_and_spends_the_token(ca_paths):
    token = holder.issue_token(ca_paths, 3600, 1, ["gpu"], False, NOW)
    reply = holder.enroll(ca_paths, request(token, "n2"), NOW, fake_signer)

    assert reply["overlay_ip"] == "10.42.0.2" and reply["groups"] == ["mesh", "gpu"]
    with pytest.raises(EnrollmentError, match="used up"):
        holder.enroll(ca_paths, request(token, "n3"), NOW, fake_signer)


@pytest.mark.parametrize(("case", "code"), [("unknown", "unknown_token"), ("expired", "token_expired"),
                                            ("used_up", "token_used_up"), ("lighthouse", "lighthouse_not_allowed"),
                                            ("name_taken", "name_taken")])
def test_refusals_spend_no_address(ca_paths, case, code):
    token = holder.issue_token(ca_paths, 60, 1, [], False, NOW)
    if case == "used_up":
        holder.enroll(ca_paths, request(token, "first"), NOW, fake_signer)
    before = snapshot(ca_paths)
    attempt = {"unknown": (request("0" * 8 + "." + "0" * 32, "n2"), NOW),
               "expired": (request(token, "n2"), NOW + 61),
               "used_up": (request(token, "n2"), NOW),
               "lighthouse": (request(token, "n2", lighthouse=True, advertise=("1.2.3.4:4242",)), NOW),
               "name_taken": (request(token, "lh"), NOW)}[case]

    with pytest.raises(EnrollmentError) as err:
        holder.enroll(ca_paths, attempt[0], attempt[1], fake_signer)
    assert err.value.code == code
    assert snapshot(ca_paths) == before


def test_a_revoked_nodes_address_is_never_handed_out_again(ca_paths):
    token = holder.issue_token(ca_paths, 3600, 2, [], False, NOW)
    first = holder.enroll(ca_paths, request(token, "n2"), NOW, fake_signer)["overlay_ip"]
    fingerprint, record = holder.revoke(ca_paths, "n2", NOW)
    second = holder.enroll(ca_paths, request(token, "n2"), NOW, fake_signer)["overlay_ip"]

    assert fingerprint == "fp-n2" and "fp-n2" in record.blocklist
    assert first == "10.42.0.2" and second == "10.42.0.3"


def test_concurrent_joins_from_threads_get_different_addresses(ca_paths):
    token = holder.issue_token(ca_paths, 3600, 40, [], False, NOW)
    with ThreadPoolExecutor(max_workers=16) as pool:
        replies = list(pool.map(lambda i: holder.enroll(ca_paths, request(token, f"t{i}"), NOW, fake_signer),
                                range(40)))

    ips = [r["overlay_ip"] for r in replies]
    assert len(set(ips)) == 40
    assert tokens.load(ca_paths.tokens)[token.split(".")[0]]["uses_left"] == 0


WORKER = """
import sys, time
sys.path.insert(0, {here!r})
from authority_fixture import fake_signer
from services.nebula.authority import holder
from services.nebula.authority.holder import JoinRequest
from services.nebula.overlay.state import NebulaPaths
from pathlib import Path
paths = NebulaPaths(Path({root!r}))
for i in range(6):
    reply = holder.enroll(paths, JoinRequest({token!r}, f"p{{sys.argv[1]}}-{{i}}", {pub!r}), time.time(), fake_signer)
    print(reply["overlay_ip"])
"""


def test_concurrent_joins_from_processes_and_threads_get_different_addresses(ca_paths):
    token = holder.issue_token(ca_paths, 3600, 36, [], False, NOW)
    code = WORKER.format(here=str(Path(__file__).parent), root=str(ca_paths.root), token=token, pub=PUB)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(n)], stdout=subprocess.PIPE, text=True)
             for n in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        local = list(pool.map(lambda i: holder.enroll(ca_paths, request(token, f"t{i}"), time.time(),
                                                         fake_signer)["overlay_ip"], range(12)))
    remote = [line for p in procs for line in p.communicate(timeout=60)[0].split()]

    assert all(p.returncode == 0 for p in procs)
    assert len(remote) == 24 and len(set(remote + local)) == 36
    assert set(allocation.load(ca_paths.allocations)) == {"10.42.0.1", *remote, *local}
