from __future__ import annotations

from typing import Any


def test_operator_sees_own_accounts(world: Any, api: Any) -> None:
    op = api.login("op_a")
    res = op.get("/api/v1/charging-accounts")
    assert res.status_code == 200, res.get_json()
    body = res.get_json()
    assert [a["id"] for a in body] == [world.a.account.id]
    assert body[0]["balance"] == {"available_fen": 5000, "held_fen": 0, "total_fen": 5000}


def test_openapi_spec_served(client: Any) -> None:
    res = client.get("/api/openapi.json")
    assert res.status_code == 200
    assert "/api/v1/charging-accounts" in res.get_json()["paths"]
