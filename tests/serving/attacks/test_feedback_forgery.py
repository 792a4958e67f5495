"""Attacks 1 and 8: labelling other clients' predictions, and probing for their ids."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.helpers.servers import Server
from tests.helpers.service import PHOTOS
from tests.serving.attacks.conftest import headers


def _predict(http: httpx.Client, who: str, index: int = 0) -> dict:
    photo = PHOTOS[index].read_bytes()
    answer = http.post("/predict", files={"file": ("p.jpg", photo)}, headers=headers(who))
    assert answer.status_code == 200, answer.text
    return answer.json()


def _metric(text: str, series: str) -> str:
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, flags=re.MULTILINE)
    assert found, f"{series} not in /metrics"
    return found.group(1)


def test_unauthenticated_routes_hand_out_no_request_ids(http: httpx.Client) -> None:
    for path in ("/health/live", "/health/ready", "/health", "/metrics", "/"):
        response = http.get(path)
        assert response.status_code == 200, path
        assert "x-request-id" not in response.headers, path
    ids = [_predict(http, "alice", i)["request_id"] for i in range(3)]
    # 128 random bits each: no shared prefix with a counter behind it (the old scheme).
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len({i[:16] for i in ids}) == 3


def test_another_client_cannot_label_a_prediction_nor_learn_it_exists(
    http: httpx.Client,
) -> None:
    owner = _predict(http, "alice")
    rid, label = owner["request_id"], owner["label"]
    forged = {"request_id": rid, "label": label}
    # No token: refused; a guessed token: the same 404 as an id that does not exist.
    missing = http.post("/feedback", json=forged, headers=headers("mallory"))
    assert (missing.status_code, missing.json()["reason"]) == (422, "missing_field")
    wrong = http.post(
        "/feedback", json={**forged, "feedback_token": "0" * 64}, headers=headers("mallory")
    )
    unknown = http.post(
        "/feedback",
        json={"request_id": "f" * 32, "feedback_token": "0" * 64, "label": label},
        headers=headers("mallory"),
    )
    assert wrong.status_code == unknown.status_code == 404
    assert wrong.json()["error"] == unknown.json()["error"]  # the same words for both
    assert rid not in wrong.text and "predicted" not in wrong.text
    # The owner's token works, once: the forgery stored nothing before it.
    mine = {**forged, "feedback_token": owner["feedback_token"]}
    stored = http.post("/feedback", json=mine, headers=headers("alice"))
    assert stored.status_code == 200 and stored.json()["stored"] is True, stored.text
    # Live accuracy, by the key that asked: alice labelled her own prediction correctly.
    text = http.get("/metrics").text
    assert _metric(text, 'model_live_accuracy_by_client{client="alice"}') == "1.0"
    assert _metric(text, 'model_live_accuracy_by_client{client="mallory"}') == "NaN"


def test_feedback_for_unknown_ids_answers_at_once(server: Server) -> None:
    """24 forged feedbacks at once: each 404 without polling the store, and /metrics
    answers alongside. The old code polled STORE_FEEDBACK_WAIT_S (10 s on this server)
    for each unknown id: past this client's 5 s timeout, so it would fail here."""
    body = {"feedback_token": "0" * 64, "label": "cat"}
    with httpx.Client(base_url=server.url, timeout=5) as client:

        def forge(i: int) -> int:
            rid = f"{i:032x}"
            return client.post(
                "/feedback", json={**body, "request_id": rid}, headers=headers("mallory")
            ).status_code

        with ThreadPoolExecutor(24) as pool:
            statuses = list(pool.map(forge, range(24)))
            metrics = client.get("/metrics")
    assert statuses == [404] * 24
    assert metrics.status_code == 200
