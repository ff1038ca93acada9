"""GET / and /static/*: the status page's files, from the package, with their types and headers.
What the page shows is tested in Chromium: tests/integration/test_status_page.py."""

from __future__ import annotations

import re

import pytest

from services.api.status_page import ASSETS, HEADERS, answer, load_assets


def test_load_assets_keeps_only_the_types_it_serves(tmp_path):
    (tmp_path / "a.js").write_text("let a = 1;")
    (tmp_path / "b.css").write_text("p {}")
    (tmp_path / "notes.txt").write_text("not served")
    (tmp_path / "sub.js").mkdir()  # a folder with a served suffix is no asset
    assets = load_assets(tmp_path)
    assert sorted(assets) == ["a.js", "b.css"]
    assert assets["a.js"].media_type == "text/javascript; charset=utf-8"
    assert assets["a.js"].body == b"let a = 1;"
    (tmp_path / "a.js").write_text("let a = 2;")
    assert load_assets(tmp_path)["a.js"].etag != assets["a.js"].etag


def test_answer_is_304_for_the_version_the_client_holds():
    asset = ASSETS["model.js"]
    assert answer(asset, None).status_code == 200
    assert answer(asset, f'"other", {asset.etag}').status_code == 304
    assert answer(asset, '"other"').status_code == 200
    assert answer(None, None).status_code == 404


def test_the_package_ships_the_page_and_every_file_it_names():
    page = ASSETS["index.html"].body.decode()
    named = set(re.findall(r'(?:src|href)="/static/([^"]+)"', page))
    assert named == {"favicon.svg", "status.css", "model.js", "status.js"}
    assert named <= set(ASSETS)


async def test_the_page_is_served_at_the_root_with_its_headers(start_api):
    api = await start_api(router=False, admin=False)  # a static page needs neither
    for path in ("/", "/?node=nope"):
        async with api.client.get(path) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
            assert resp.headers["Content-Security-Policy"] == HEADERS["Content-Security-Policy"]
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
            assert "<title>meshworker status</title>" in await resp.text()


@pytest.mark.parametrize(("name", "media_type"), [
    ("model.js", "text/javascript; charset=utf-8"), ("status.js", "text/javascript; charset=utf-8"),
    ("status.css", "text/css; charset=utf-8"), ("favicon.svg", "image/svg+xml"),
])
async def test_assets_are_served_with_their_type_and_revalidated(start_api, name, media_type):
    api = await start_api(router=False, admin=False)
    async with api.client.get(f"/static/{name}") as resp:
        assert (resp.status, resp.headers["Content-Type"]) == (200, media_type)
        assert resp.headers["Cache-Control"] == "no-cache"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert await resp.read() == ASSETS[name].body
        etag = resp.headers["ETag"]
    async with api.client.get(f"/static/{name}", headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304


@pytest.mark.parametrize("path", ["/static/nope.js", "/static/index.html", "/static/..%2Fapp.py",
                                  "/static/../app.py", "/static/", "/nope"])
async def test_anything_else_is_a_404_in_our_error_shape(start_api, path):
    api = await start_api(router=False, admin=False)
    async with api.client.get(path) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"
