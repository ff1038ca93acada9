"""Models as a backend lists them (OpenAI's GET /v1/models) and their load."""

from __future__ import annotations

import json

import pytest

from services.common.models import Model, from_model_list, load_percent


def listing(*entries) -> bytes:
    return json.dumps({"object": "list", "data": list(entries)}).encode()


def test_the_builtins_kind_and_context_length_are_read():
    answer = listing({"id": "minilm", "object": "model", "kind": "embedding", "context_length": 256},
                     {"id": "smol", "object": "model", "kind": "chat", "context_length": 8192})
    assert from_model_list(answer) == (Model("minilm", "embedding", 256), Model("smol", "chat", 8192))


def test_another_servers_listing_is_a_chat_model_with_vllms_length_if_given():
    answer = listing({"id": "meta-llama/Llama-3.1-8B", "object": "model", "max_model_len": 131072},
                     {"id": "llama3:8b", "object": "model", "owned_by": "library"})
    assert from_model_list(answer) == (Model("meta-llama/Llama-3.1-8B", "chat", 131072), Model("llama3:8b"))


@pytest.mark.parametrize("entry", [{"id": ""}, {"id": 7}, {"id": "bad id"}, {"id": "x\r\nset-cookie: 1"},
                                   {"id": "a" * 200}, "smol", None])
def test_an_entry_without_a_usable_id_is_skipped(entry):
    assert from_model_list(listing(entry, {"id": "ok"})) == (Model("ok"),)


@pytest.mark.parametrize("answer", [b"", b"not json", b"[]", b'{"data": "x"}', b'{"data": null}'])
def test_an_answer_that_is_no_listing_lists_nothing(answer):
    assert from_model_list(answer) == ()


def test_an_unknown_kind_or_a_bad_length_falls_back():
    answer = listing({"id": "m", "kind": "rerank", "context_length": -5})
    assert from_model_list(answer) == (Model("m", "chat", 0),)


def test_load_is_in_flight_over_capacity_in_percent():
    assert (load_percent(0, 1), load_percent(1, 1), load_percent(3, 4), load_percent(5, 0)) == (0, 100, 75, 500)
