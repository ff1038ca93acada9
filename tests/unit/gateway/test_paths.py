"""Tests for services.gateway.paths (raw path and Content-Length checks) and app.node_status."""

from __future__ import annotations

import pytest

from services.gateway.app import node_status
from services.gateway.errors import GatewayError
from services.gateway.paths import check_body_length, split_service_path


@pytest.mark.parametrize("raw, expected", [
    (b"/service/vision-ocr", ("vision-ocr", "")),
    (b"/service/vision-ocr/", ("vision-ocr", "/")),
    (b"/service/vision-ocr/v1/x%20y", ("vision-ocr", "/v1/x%20y")),
    (b"/service/llm-inference/v1/chat/completions", ("llm-inference", "/v1/chat/completions")),
    (b"/service/" + b"a" * 63, ("a" * 63, "")),
])
def test_split_service_path(raw, expected):
    assert split_service_path(raw) == expected


@pytest.mark.parametrize("raw, code", [
    (b"/service/..", "bad_service_name"),
    (b"/service/a%2Fb", "bad_service_name"),
    (b"/service/a%2e%2e", "bad_service_name"),
    (b"/service/" + b"a" * 64, "bad_service_name"),
    (b"/service/" + b"a" * 300, "bad_service_name"),
    (b"/service/UPPER", "bad_service_name"),
    (b"/service/", "bad_service_name"),
    (b"/service/ok/../etc", "bad_path"),
    (b"/service/ok/%2e%2e/etc", "bad_path"),
    (b"/service/ok/./etc", "bad_path"),
    (b"/service/ok/a%00b", "bad_path"),
    (b"/service/ok/a%0Ab", "bad_path"),
])
def test_split_service_path_refuses(raw, code):
    with pytest.raises(GatewayError) as caught:
        split_service_path(raw)

    assert (caught.value.status, caught.value.code) == (400, code)


def test_check_body_length_without_header_is_none():
    assert check_body_length(None, 100) is None


@pytest.mark.parametrize("value, expected", [("10", 10), ("100", 100), ("0", 0)])
def test_check_body_length_within_limit(value, expected):
    assert check_body_length(value, 100) == expected


def test_check_body_length_over_limit_is_413():
    with pytest.raises(GatewayError) as caught:
        check_body_length("101", 100)

    assert (caught.value.status, caught.value.code) == (413, "body_too_large")
    assert "100 bytes" in caught.value.message


# "\u00b2" is the byte 0xB2 of a latin-1 header: str.isdigit() says True, int() refuses it.
@pytest.mark.parametrize("value", ["abc", "-1", "1.5", " 10", "", "\u00b2"])
def test_check_body_length_not_a_number_is_400(value):
    with pytest.raises(GatewayError) as caught:
        check_body_length(value, 100)

    assert (caught.value.status, caught.value.code) == (400, "bad_content_length")


SERVING = {"dht": "SERVING", "router": "SERVING", "gateway": "SERVING"}


@pytest.mark.parametrize("components, backends, has_table, expected", [
    (SERVING, {"vision-ocr": True}, True, "healthy"),
    ({}, {}, True, "healthy"),
    ({**SERVING, "router": "NOT_SERVING"}, {"vision-ocr": True}, True, "degraded"),
    ({**SERVING, "dht": "UNKNOWN"}, {"vision-ocr": True}, True, "degraded"),
    (SERVING, {"vision-ocr": True, "llm": False}, True, "degraded"),
    (SERVING, {"vision-ocr": True}, False, "unhealthy"),
    ({**SERVING, "router": "NOT_SERVING"}, {"vision-ocr": False}, False, "unhealthy"),
])
def test_node_status(components, backends, has_table, expected):
    assert node_status(components, backends, has_table) == expected
