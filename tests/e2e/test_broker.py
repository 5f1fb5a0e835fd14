"""The broker is not a back door (issue 11): Flower launches no task, and a task published by
hand (a script, Flower) checks its arguments like the API does — on real processes, real Redis."""
from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.request

import pytest

from tests.infra import free_port, port_accepts
from worker.entrypoints import queues
from worker.entrypoints.tasks import cases as case_tasks
from worker.entrypoints.tasks import sms as sms_tasks

pytestmark = pytest.mark.e2e
PASSWORD = "flower-test-password"


def _request(url: str, method: str = "GET", auth: bool = True) -> int:
    request = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None)
    if auth:
        token = base64.b64encode(f"ops:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_flower_is_read_only(stack):
    port = free_port()
    flower = stack.start("flower", "flower", "--port", str(port), "--address", "127.0.0.1",
                         extra_env={"RELANCE_FLOWER_PASSWORD": PASSWORD})
    base = f"http://127.0.0.1:{port}"
    stack.wait_until(lambda: port_accepts("127.0.0.1", port) and _request(base + "/healthcheck", auth=False) == 200,
                     60, "Flower up", procs=[flower])
    assert _request(base + "/api/workers", auth=False) == 401  # authentication always
    assert _request(base + "/api/workers") == 200  # reading still works
    for route in ("/api/task/async-apply/relance.cases.advance", "/api/task/apply/relance.cases.advance",
                  "/api/task/send-task/relance.sms.send", "/api/task/revoke/x", "/api/worker/shutdown/w@h",
                  "/api/worker/pool/grow/w@h", "/api/task/rate-limit/w@h"):
        assert _request(base + route, method="POST") == 404, route
    assert not stack.queue_lengths()[queues.CASES]  # nothing was published


def test_tasks_published_by_hand_check_their_arguments(stack):
    worker = stack.start_worker("w", (queues.CASES, queues.SMS), concurrency=1)
    bad = [
        sms_tasks.send.apply_async(args=["1" * 30]),
        sms_tasks.send.apply_async(args=[1, "0001-01-01T00:00:00"]),
        case_tasks.advance.apply_async(args=[-4]),
        case_tasks.apply_event.apply_async(kwargs={"external_id": "CAF35-0000001", "type": "legitimate_reason",
                                                   "until": "9999-12-31", "category": "health"}),
        case_tasks.apply_event.apply_async(kwargs={"external_id": "CAF35-0000001", "type": "npai",
                                                   "message_id": 3}),
    ]
    outcomes = stack.wait_tasks([r.id for r in bad])
    # Refused before doing anything: InputError (a ValueError) with its French reason.
    assert all(o.startswith("raised") and re.search(r"(InputError|ValueError)\('", o) for o in outcomes), outcomes
    for outcome, words in zip(outcomes, ("identifiant", "instant simulé", "identifiant", "trop lointaine",
                                         "champ inconnu")):
        assert words in outcome, (words, outcome)
    assert worker.alive()
    print("\n" + "\n".join(json.dumps(o, ensure_ascii=False)[:160] for o in outcomes))
