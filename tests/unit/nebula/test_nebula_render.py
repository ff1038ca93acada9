"""nebula config rendering and how a change reaches nebula (pure)."""

from __future__ import annotations

import json

from services.nebula.overlay import render

LH = {"10.42.0.1": ["10.77.0.11:4242"], "10.42.0.9": ["10.77.0.19:4242"]}


def view(**changes) -> render.NodeView:
    base = {"ca": "/s/ca.crt", "cert": "/s/host.crt", "key": "/s/host.key", "overlay_ip": "10.42.0.2",
            "listen_port": 4242, "gateway_port": 8000, "peer_port": 8443, "dht_port": 8468, "lighthouses": LH,
            "tun_dev": "mesh4242"}
    return render.NodeView(**{**base, **changes})


def test_member_lists_every_lighthouse_and_reaches_them_statically():
    config = render.config(view())

    assert config["lighthouse"] == {"am_lighthouse": False, "interval": 60, "hosts": ["10.42.0.1", "10.42.0.9"]}
    assert config["static_host_map"] == LH
    assert config["listen"] == {"host": "0.0.0.0", "port": 4242}
    assert config["punchy"] == {"punch": True, "respond": True}


def test_lighthouse_lists_no_upstream_lighthouses_and_not_itself():
    config = render.config(view(overlay_ip="10.42.0.1", am_lighthouse=True))

    assert config["lighthouse"]["hosts"] == []
    assert config["static_host_map"] == {"10.42.0.9": ["10.77.0.19:4242"]}


def test_firewall_admits_only_gateway_and_dht_from_the_mesh():
    inbound = render.config(view())["firewall"]["inbound"]

    assert inbound == [{"port": 8000, "proto": "tcp", "group": "mesh"},
                       {"port": 8443, "proto": "tcp", "group": "mesh"},
                       {"port": 8468, "proto": "udp", "group": "mesh"}]


def test_port_zero_cannot_be_named_in_advance():
    inbound = render.config(view(gateway_port=0))["firewall"]["inbound"]

    assert inbound[0]["port"] == "any"


def test_blocklist_and_disconnect_invalid():
    pki = render.config(view(blocklist=("ff", "aa")))["pki"]

    assert pki["blocklist"] == ["aa", "ff"]
    assert pki["disconnect_invalid"] is True


def test_stats_on_loopback_at_the_listen_port_number_and_json_logs():
    config = render.config(view())

    assert config["stats"]["listen"] == "127.0.0.1:4242"
    assert config["stats"]["type"] == "prometheus"
    assert config["logging"] == {"level": "info", "format": "json"}
    assert render.config(view(listen_port=0))["stats"] == {"type": "none"}


def test_rendering_is_json_that_round_trips_and_is_stable():
    text = render.render(view())

    assert text.startswith("#") and render.parse(text) == json.loads(json.dumps(render.config(view())))
    assert render.render(view()) == text


def test_blocklist_or_firewall_changes_are_a_hup():
    old = render.render(view())

    assert render.reload_action(old, old) == "none"
    assert render.reload_action(old, render.render(view(blocklist=("aa",)))) == "hup"
    assert render.reload_action(old, render.render(view(dht_port=9000))) == "hup"


def test_lighthouse_listen_or_tun_changes_need_a_restart():
    old = render.render(view())

    assert render.reload_action(old, render.render(view(lighthouses={"10.42.0.1": ["1.2.3.4:4242"]}))) == "restart"

    assert render.reload_action(old, render.render(view(listen_port=4343))) == "restart"
    assert render.reload_action(old, render.render(view(am_lighthouse=True))) == "restart"
    assert render.reload_action(None, old) == "restart"
    assert render.reload_action("hand: edited", old) == "restart"


def test_tun_names_fit_ifnamsiz_and_differ_per_node():
    names = {render.tun_dev_name(4242, "/a"), render.tun_dev_name(4243, "/a"),
             render.tun_dev_name(0, "/a"), render.tun_dev_name(0, "/b")}

    assert len(names) == 4 and all(len(n) <= 15 for n in names)
