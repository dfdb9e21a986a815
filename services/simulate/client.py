"""The service's HTTP API as the demo uses it: what the platform and an operator would send.

Every call goes through `request`, which retries what the API says to retry: 503 (database
or bus away) and 429 (rate limit), after the `Retry-After` they carry, and connection errors
(the service restarting). Anything else that is not a success is the caller's to judge.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import httpx

RETRIED_STATUSES = (429, 503)
MAX_BATCH = 1000  # API.md: a batch holds at most 1,000 events


class ApiError(Exception):
    """An answer the demo cannot go on from; the message names the call and the answer."""


class DemoClient:
    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        attempts: int = 30,
        timeout: float = 60,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.http = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
        )
        self.attempts = attempts
        self.sleep = sleep
        self.retries = 0  # requests retried after a 503/429 or a connection error

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(1, self.attempts + 1):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt == self.attempts:
                    raise ApiError(f"{method} {path}: {exc!r}") from exc
                self.retries += 1
                self.sleep(min(2.0**attempt / 4, 5.0))
                continue
            if response.status_code not in RETRIED_STATUSES or attempt == self.attempts:
                break
            self.retries += 1
            self.sleep(_retry_after(response))
        if response.status_code in (401, 403):
            raise ApiError(f"{method} {path}: {response.status_code}: the key needs scope admin")
        return response

    def json(self, method: str, path: str, ok: Sequence[int] = (200,), **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if response.status_code not in ok:
            raise ApiError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json()

    # --- the platform ---

    def post_events(self, events: Sequence[dict[str, Any]]) -> tuple[int, int]:
        """One batch; (accepted, duplicates). A 409 means these ids were used with other
        content: another version of the demo posted this seed and month."""
        response = self.request("POST", "/v1/events", json=list(events))
        if response.status_code == 409:
            raise ApiError(
                "events of this seed and month were already posted with other content "
                "(by another version of the simulator?): use another --seed\n" + response.text[:500]
            )
        if response.status_code != 202:
            raise ApiError(f"POST /v1/events: {response.status_code} {response.text[:500]}")
        body = response.json()
        return body["accepted"], body["duplicates"]

    def submit_application(self, form: dict[str, Any]) -> dict[str, Any] | None:
        """The application as created; None on a 409 (one is open, or the creator is
        certified): what is there already stands."""
        response = self.request("POST", "/v1/applications", json=form)
        if response.status_code == 409:
            return None
        if response.status_code != 201:
            raise ApiError(f"POST /v1/applications: {response.status_code} {response.text[:500]}")
        return response.json()

    # --- the operator ---

    def applications(self) -> Iterator[dict[str, Any]]:
        """Every application, in the order they arrived."""
        yield from self._pages("/v1/admin/applications", 500)

    def approve(self, application_id: str, certified_at: datetime) -> bool:
        """True when approved now; False on a 409 (decided already)."""
        return self._decide(application_id, "approve", {"certified_at": certified_at.isoformat()})

    def reject(self, application_id: str, reason: str) -> bool:
        return self._decide(application_id, "reject", {"reason": reason})

    def _decide(self, application_id: str, verb: str, body: dict[str, Any]) -> bool:
        path = f"/v1/admin/applications/{application_id}/{verb}"
        response = self.request("POST", path, json=body)
        if response.status_code == 409:
            return False
        if response.status_code != 200:
            raise ApiError(f"POST {path}: {response.status_code} {response.text[:500]}")
        return True

    def lags(self) -> dict[str, dict[str, Any]]:
        groups = self.json("GET", "/v1/admin/consumers")["groups"]
        return {g["name"]: g for g in groups}

    def settle(self, month: str) -> httpx.Response:
        return self.request("POST", f"/v1/admin/months/{month}/settle", params={"limit": 1})

    def freeze(self, week: str) -> httpx.Response:
        return self.request("POST", f"/v1/admin/weeks/{week}/freeze", params={"limit": 1})

    # --- reads ---

    def ranking(self, month: str) -> dict[str, Any]:
        """The whole ranking of the month: its header and every entry."""
        first = self.json("GET", f"/v1/rankings/{month}", params={"limit": 500})
        entries = list(first["entries"])
        while len(entries) < first["total"]:
            page = self.json(
                "GET", f"/v1/rankings/{month}", params={"limit": 500, "offset": len(entries)}
            )
            if not page["entries"]:
                break
            entries += page["entries"]
        return {**first, "entries": entries}

    def rewards(self) -> Iterator[dict[str, Any]]:
        yield from self._pages("/v1/rewards", 500)

    def voucher_pool(self) -> dict[str, Any]:
        return self.json("GET", "/v1/programs/new-creator-vouchers")

    def _pages(self, path: str, limit: int) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            page = self.json("GET", path, params={"limit": limit, "offset": offset})
            yield from page["items"]
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                return


def batches(events: Sequence[dict[str, Any]], size: int = MAX_BATCH) -> Iterator[Sequence]:
    for start in range(0, len(events), size):
        yield events[start : start + size]


def _retry_after(response: httpx.Response) -> float:
    """The wait the answer asks for (seconds, as API.md's 429 and 503 send it); 1 s if none."""
    try:
        return max(0.0, min(float(response.headers.get("Retry-After", "1")), 60.0))
    except ValueError:
        return 1.0
