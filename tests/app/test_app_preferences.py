"""GET/PUT /preferences/{user_id} on the real PostgreSQL, and the database going down and back."""

from __future__ import annotations

import pytest


async def test_unknown_user_is_404(make_app):
    async with make_app() as client:
        response = await client.http.get("/preferences/nobody-here")
    assert response.status_code == 404
    assert response.json()["error"] == {
        "message": "no preferences stored for user 'nobody-here'",
        "type": "not_found",
        "param": None,
        "code": "not_found",
    }


async def test_put_then_get_round_trips_the_json_object(make_app):
    prefs = {"theme": "dark", "language": "pt-BR", "nested": {"n": [1, 2, 3]}, "ok": True}
    async with make_app() as client:
        put = await client.http.put("/preferences/alice", json=prefs)
        got = await client.http.get("/preferences/alice")
    assert put.status_code == 200
    assert put.json()["user_id"] == "alice"
    assert put.json()["preferences"] == prefs
    assert got.status_code == 200
    assert got.json()["preferences"] == prefs
    assert got.json()["updated_at"] == put.json()["updated_at"]


async def test_put_replaces_the_whole_object(make_app):
    async with make_app() as client:
        await client.http.put("/preferences/bob", json={"a": 1, "b": 2})
        await client.http.put("/preferences/bob", json={"c": 3})
        got = await client.http.get("/preferences/bob")
    assert got.json()["preferences"] == {"c": 3}


async def test_preferences_persist_across_app_instances(make_app):
    async with make_app() as first:
        await first.http.put("/preferences/carol", json={"tz": "America/Sao_Paulo"})
    async with make_app() as second:
        got = await second.http.get("/preferences/carol")
    assert got.json()["preferences"] == {"tz": "America/Sao_Paulo"}


@pytest.mark.parametrize("body", [[1, 2], "text", 3, None])
async def test_put_requires_a_json_object(make_app, body):
    async with make_app() as client:
        response = await client.http.put("/preferences/dave", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_overlong_user_id_is_422(make_app):
    async with make_app() as client:
        response = await client.http.get("/preferences/" + "x" * 256)
    assert response.status_code == 422


async def test_database_down_then_back_without_restarting_the_app(make_app, postgres):
    async with make_app() as client:
        # Warm the pool so it holds connections that the restart will kill.
        assert (await client.http.put("/preferences/erin", json={"v": 1})).status_code == 200
        assert (await client.http.get("/ready")).status_code == 200

        postgres.stop()
        try:
            ready = await client.http.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["status"] == "unavailable"
            assert ready.json()["reason"]
            for response in (
                await client.http.get("/preferences/erin"),
                await client.http.put("/preferences/erin", json={"v": 2}),
            ):
                assert response.status_code == 503
                assert response.json()["error"]["type"] == "database_unavailable"
                assert response.json()["error"]["message"] == (
                    "the database is unavailable; retry shortly"
                )
            # Liveness and metrics do not depend on the database.
            assert (await client.http.get("/health")).json() == {"status": "ok"}
            assert (await client.http.get("/metrics")).status_code == 200
            chat = await client.http.post(
                "/v1/chat/completions",
                json={"model": "fake/x", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert chat.status_code == 403  # fail-closed allowlist, unrelated to the database
        finally:
            postgres.start()

        assert (await client.http.get("/ready")).status_code == 200
        got = await client.http.get("/preferences/erin")
        assert got.status_code == 200
        assert got.json()["preferences"] == {"v": 1}
        assert (await client.http.put("/preferences/erin", json={"v": 3})).status_code == 200
