#!/usr/bin/env python3
"""A sumsvc client with requests, called the way clients of the original service call it.

    pip install requests
    python3 examples/client.py [BASE_URL]      # default http://127.0.0.1:8000

It sums synchronously, submits a sum and waits for it (a long poll), streams the
results of several sums as they finish (server-sent events), cancels a sum, works in
bulk (many sums in one request, many results in one read), and shows an error's
`detail`.
Numbers are read with `parse_float=Decimal`, so the exact sums sumsvc answers stay
exact here too: 0.1 + 0.2 prints 0.3, not 0.30000000000000004. Each submit carries an
Idempotency-Key, so a retry after a timeout or a dropped connection gets the first
answer instead of queueing the sum twice.
"""

import json
import sys
import time
import uuid
from decimal import Decimal

import requests


class SumsvcError(Exception):
    """An error answer: an RFC 9457 problem whose `detail` says what to do."""

    def __init__(self, response):
        try:
            problem = response.json()
        except ValueError:
            problem = {}
        self.status = response.status_code
        self.title = problem.get("title", response.reason)
        self.detail = problem.get("detail", response.text)
        super().__init__(f"{self.status} {self.title}: {self.detail}")


class Sumsvc:
    def __init__(self, base_url, timeout=35, retries=5):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout  # longer than the service's sync_timeout (30 s)
        self.retries = retries
        self.http = requests.Session()

    def _call(self, method, path, idempotent=False, **kwargs):
        """One request; a 503 (a dependency or the workers are away) is retried after
        its Retry-After, a few times, and so is a 409 (the same Idempotency-Key still
        being answered); a request that may be sent again (a GET, or one with an
        Idempotency-Key) is also retried after a timeout or a dropped connection. Any
        other error raises SumsvcError."""
        idempotent = idempotent or method == "GET"
        for attempt in range(self.retries + 1):
            try:
                response = self.http.request(
                    method, self.base_url + path, timeout=self.timeout, **kwargs
                )
            except (requests.ConnectionError, requests.Timeout):
                if not idempotent or attempt == self.retries:
                    raise
                time.sleep(1)
                continue
            if response.status_code not in (409, 503) or attempt == self.retries:
                break
            time.sleep(float(response.headers.get("Retry-After", "1")))
        if response.status_code >= 400:
            raise SumsvcError(response)
        return response

    def sync_sum(self, args):
        """The exact sum, waiting for it; past the service's deadline (202), polls."""
        response = self._call("POST", "/sync/sum", json={"args": args})
        body = response.json(parse_float=Decimal)
        if response.status_code == 202:
            return self.wait_for_result(body["session_id"])
        return body["result"]

    def post_task(self, args):
        """Queues a sum, once however often it is retried; the session id to poll."""
        key = f'"{uuid.uuid4()}"'
        response = self._call(
            "POST",
            "/async/post_task",
            idempotent=True,
            json={"args": args},
            headers={"Idempotency-Key": key},
        )
        return response.json()["session_id"]

    def get_task_result(self, session_id):
        """The task's state: {"session_id", "result" (None until done), "status"}."""
        response = self._call(
            "GET", "/async/get_task_result", params={"session_id": session_id}
        )
        return response.json(parse_float=Decimal)

    def wait_for_result(self, session_id, timeout=60):
        """The sum, once the task is done: each request waits up to 20 s for it and
        answers the moment it ends (Prefer: wait, a long poll)."""
        deadline = time.monotonic() + timeout
        while True:
            response = self._call(
                "GET", f"/async/tasks/{session_id}", headers={"Prefer": "wait=20"}
            )
            task = response.json(parse_float=Decimal)
            if task["status"] == "done":
                return task["result"]
            if task["status"] in ("failed", "cancelled"):
                raise RuntimeError(f"session {session_id} {task['status']}: {task}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"session {session_id} still pending")

    def sync_sums(self, lists):
        """The exact sum of each list, in one request; past the service's deadline (202),
        waits for those not done yet."""
        body = {"tasks": [{"args": args} for args in lists]}
        response = self._call("POST", "/sync/sums", json=body)
        results = response.json(parse_float=Decimal)["results"]
        if response.status_code == 200:
            return results
        return [
            r["result"] if r["status"] == "done" else self.wait_for_result(r["session_id"])
            for r in results
        ]

    def post_tasks(self, lists):
        """Queues many sums in one request, all or none, once however often it is
        retried; their session ids, in order."""
        key = f'"{uuid.uuid4()}"'
        response = self._call(
            "POST",
            "/async/post_tasks",
            idempotent=True,
            json={"tasks": [{"args": args} for args in lists]},
            headers={"Idempotency-Key": key},
        )
        return response.json()["session_ids"]

    def get_task_results(self, session_ids, timeout=60):
        """The sums of many sessions, reading those not done yet again, many in each
        request; a session that does not exist or expired raises."""
        deadline = time.monotonic() + timeout
        results = {}
        left = list(session_ids)
        while left:
            response = self._call(
                "POST", "/async/get_task_results", json={"session_ids": left}
            )
            for entry in response.json(parse_float=Decimal)["results"]:
                if "problem" in entry:
                    problem = entry["problem"]
                    raise RuntimeError(f"session {entry['session_id']}: {problem['detail']}")
                if entry["status"] != "pending":
                    results[entry["session_id"]] = entry["result"]
            left = [sid for sid in left if sid not in results]
            if left and time.monotonic() > deadline:
                raise TimeoutError(f"sessions {left} still pending")
            if left:
                time.sleep(0.05)
        return [results[sid] for sid in session_ids]

    def cancel(self, session_id):
        """Cancels a task not computed yet; the session's state after: "cancelled", or
        (answered 409) "done" with the result of a task that ended first."""
        response = self.http.delete(
            f"{self.base_url}/async/tasks/{session_id}", timeout=self.timeout
        )
        if response.status_code not in (200, 409):
            raise SumsvcError(response)
        return response.json(parse_float=Decimal)

    def results(self, session_ids):
        """Yields (session_id, state) as each session's task ends, from one stream of
        server-sent events; reconnects when the service ends a stream early, as an
        EventSource does. A session that does not exist, or expired, raises."""
        query = {"session_id": list(session_ids)}
        headers = {}
        seen = set()
        while True:
            with self.http.get(
                self.base_url + "/async/events",
                params=query,
                headers=headers,
                stream=True,
                timeout=self.timeout,
            ) as response:
                if response.status_code == 204:
                    return
                if response.status_code >= 400:
                    raise SumsvcError(response)
                for event, event_id, data in _events(response):
                    if event == "end":
                        return
                    headers["Last-Event-ID"] = event_id
                    body = json.loads(data, parse_float=Decimal)
                    if event == "problem":
                        problem = body["problem"]
                        raise RuntimeError(f"session {event_id}: {problem['detail']}")
                    # A reconnect tells every ended session again: each once here.
                    if body["session_id"] not in seen:
                        seen.add(body["session_id"])
                        yield body["session_id"], body


def _events(response):
    """(event, id, data) of each server-sent event of a streamed response."""
    event, event_id, data = "message", None, []
    for line in response.iter_lines(decode_unicode=True):
        if line == "":
            if data:
                yield event, event_id, "\n".join(data)
            event, data = "message", []
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "id":
                event_id = value
            elif field == "data":
                data.append(value)


def main():
    base_url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
    sumsvc = Sumsvc(base_url)

    print("sync/sum [0.1, 0.2] =", sumsvc.sync_sum([0.1, 0.2]))
    big = [9007199254740993, 1]
    print(f"sync/sum {big} =", sumsvc.sync_sum(big))

    session_id = sumsvc.post_task([1, 2.5])
    print("post_task [1, 2.5] -> session", session_id)
    print(f"get_task_result {session_id} =", sumsvc.wait_for_result(session_id))

    sums = {sumsvc.post_task([n, 0.5]): n for n in (1, 2, 3)}
    streamed = {sums[sid]: state["result"] for sid, state in sumsvc.results(sums)}
    print("events [n, 0.5] for n in 1, 2, 3 =", [streamed[n] for n in (1, 2, 3)])

    lists = [[1, 2], [0.1, 0.2], [9007199254740993, 1]]
    print(f"sync/sums {lists} =", sumsvc.sync_sums(lists))
    ids = sumsvc.post_tasks(lists)
    print(f"post_tasks {lists} -> {len(ids)} sessions")
    print("get_task_results =", sumsvc.get_task_results(ids))

    session_id = sumsvc.post_task([4])
    state = sumsvc.cancel(session_id)
    if state["status"] == "cancelled":
        print(f"cancel {session_id} -> cancelled")
    else:
        print(f"cancel {session_id} -> too late: {state['status']}, {state['result']}")

    try:
        sumsvc.sync_sum([1, "two"])
    except SumsvcError as error:
        print("sync/sum [1, 'two'] ->", error)
    try:
        sumsvc.get_task_result(1)
    except SumsvcError as error:
        print("get_task_result 1 ->", error)

if __name__ == "__main__":
    main()
