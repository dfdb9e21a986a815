"""Schemathesis fuzzes every operation of the OpenAPI document against the real server
(`creator-activity serve`, a real PostgreSQL, the embedded bus), with an admin key so that the
authenticated paths are exercised, in positive mode (data the schema allows) and negative mode
(data it does not), plus its coverage phase (boundaries, missing and unexpected parts). Each
answer must be no 5xx, in the error shape when it is an error, documented (status, content
type, headers) and conforming to its documented schema; data the schema allows must not be
refused with 400/422 (the schema is as strict as the code), and data it refuses must be
refused (the code is as strict as the schema). Derandomized: the same cases every run.

The stateful phase chains requests on the document's links (shared/openapi.py `LINKS`): an
application submitted, then read, approved or rejected by its id, its creator read; events
posted, then their creator's month, rewards and program record read; with the same checks.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import unquote

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.generation.stateful.state_machine import DEFAULT_STATE_MACHINE_SETTINGS

from services.runtime import Runtime
from shared.program_time import month_of
from shared.settings import Settings
from tests.brokers import HOST, free_port
from tests.conftest import fresh_database
from tests.system import ADMIN_KEY, CLI, wait_until_ready

# Per operation and phase; measured: the whole module takes about a minute on 2 cores.
MAX_EXAMPLES = 20

# A refusal: the defaults, and 413 for a batch over 1,000 events or a body over the limit.
NEGATIVE_STATUSES = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422"]


def _valid_may_be_422(path_regex: str) -> dict:
    return {
        "include-path-regex": path_regex,
        "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "404", "409", "422"]}},
    }


CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20261129,
        # a loaded CI machine makes the event envelope "too slow" to generate; it is not
        "suppress-health-check": ["too_slow"],
        "generation": {
            "mode": "all",
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",
        },
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            # the documented links only: no links Schemathesis would infer on its own
            "stateful": {"enabled": True, "inference": {"algorithms": []}},
        },
        "checks": {
            # 404 and 409 answer valid requests about the state (an unknown id, a month not
            # over); 400 and 422 would mean the schema allows what the code refuses.
            "positive_data_acceptance": {"expected-statuses": ["2xx", "404", "409"]},
            "negative_data_rejection": {"expected-statuses": NEGATIVE_STATUSES},
        },
        "auth": {"openapi": {"apiKey": {"bearer": ADMIN_KEY}}},
        "operations": [
            {
                # The coverage phase combines every optional attribute of every event type:
                # minutes of generation for a handful of distinct requests. Examples and
                # fuzzing cover the envelope; tests/test_openapi.py holds it to the code.
                "include-path": "/v1/events",
                "phases": {"coverage": {"enabled": False}},
            },
            # What JSON Schema cannot say, the code checks with a 422: a week 53 in a year with
            # 52 weeks; weights that are all 0; a settings change that changes nothing or
            # names a value out of its range.
            _valid_may_be_422(path_regex=r"\{week\}"),
            _valid_may_be_422(path_regex=r"^/v1/admin/months/\{month\}/preview$"),
            _valid_may_be_422(path_regex=r"^/v1/admin/program-settings$"),
        ],
    }
)


def rfc3339_in_bounds() -> st.SearchStrategy[str]:
    """Times an event or an approval may carry: from 2000 until a minute ago, any offset, in
    the spellings RFC 3339 allows (until the day before: the same bounds all day, the same
    cases). The schema says the bounds (`x-earliest`, relative to the
    server's clock); JSON Schema cannot, so this is how the fuzzer knows them."""
    offsets = st.integers(-(14 * 60), 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
    yesterday = datetime.combine(datetime.now().date(), datetime.min.time()) - timedelta(days=1)
    instants = st.datetimes(min_value=datetime(2000, 1, 2), max_value=yesterday)
    return st.builds(
        lambda instant, offset: instant.replace(tzinfo=UTC).astimezone(offset).isoformat(),
        instants,
        offsets,
    )


schemathesis.openapi.format("date-time", rfc3339_in_bounds())

# JSON Schema's `integer` is any number with no fraction: 67194.0 is one. The API takes counts
# only as JSON integers (docs/decisions.md, "Strict data"), and schemathesis judges integers
# near 2**63 as floats (2**63 + 192 passes its "at most 2**63 - 1"). A 422 for exactly these is
# right; the fuzzer calling it "schema-valid data rejected" is dropped, nothing else.
NOT_AN_INT64 = ("Input should be a valid integer", "less than or equal to 9223372036854775807")


@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:
    if type(failure).__name__ != "RejectedPositiveData" or response.status_code != 422:
        return True
    details = response.json().get("details") or [{"msg": ""}]
    return not all(any(m in d.get("msg", "") for m in NOT_AN_INT64) for d in details)


@pytest.fixture(scope="module")
async def server(postgres_uri):
    """`creator-activity serve` on a database of its own, for the whole module."""
    async with fresh_database(postgres_uri) as database_url:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CREATOR_ACTIVITY_")}
        env.update(
            CREATOR_ACTIVITY_DATABASE_URL=database_url.replace("+asyncpg", ""),
            CREATOR_ACTIVITY_BOOTSTRAP_ADMIN_KEY=ADMIN_KEY,
            CREATOR_ACTIVITY_LOG_LEVEL="WARNING",
        )
        process = await asyncio.create_subprocess_exec(
            CLI,
            "serve",
            "--host",
            HOST,
            "--port",
            str(port),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        base_url = f"http://{HOST}:{port}"
        try:
            async with httpx.AsyncClient(base_url=base_url) as client:
                await wait_until_ready(client, process, within=60)
            yield base_url
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
            log = stderr.decode(errors="replace")
            assert "Traceback" not in log, log[-5000:]


def api_document() -> dict:
    """The document the server serves (the same settings: defaults), built in-process so that
    pytest can list one test per operation before any server runs."""
    app = Runtime(Settings(_env_file=None)).create_app(manage_lifecycle=False)
    return app.openapi()


schema = schemathesis.openapi.from_dict(api_document(), config=CONFIG)


@pytest.mark.timeout(600)  # one operation's examples on a loaded machine; about 5 s alone
@schema.parametrize()
def test_every_operation_answers_every_input_as_its_schema_says(case, server):
    case.call_and_validate(base_url=server)


# Scenarios, and requests per scenario (at least 2): some 100 requests; measured: 20-40 s
# on 2 loaded cores.
SCENARIOS = 20
STEPS = 6
MONTH_PATH = "/v1/creators/{creator_id}/months/{month}"
ZONE = Settings(_env_file=None).timezone


class Workflow(schema.as_state_machine()):  # type: ignore[misc]
    """Schemathesis' state machine against the module's server, with what a link cannot say:

    - Each scenario has creators and event ids of its own (a tag appended): the same requests
      get the same answers in every scenario, as Hypothesis requires of a test (an application
      of a creator who applied in an earlier scenario would be a 409, not a 201).
    - Every other application states a verified account: random forms are nearly all
      ineligible, and only an eligible application can be approved.
    - A client reading the month of a creator it posted a post for reads the post's month (in
      the program time zone), once the consumers have applied it.
    """

    base_url = ""
    scenarios = 0
    # (source operation, link, status) of each request that took its values from a link
    followed: set[tuple[str, str, int]] = set()

    def setup(self) -> None:
        Workflow.scenarios += 1
        self.tag = f"~{Workflow.scenarios}"
        self.applications = 0
        self.months: dict[str, str] = {}  # creator -> month of a post created for them

    def get_call_kwargs(self, case):
        return {"base_url": self.base_url}

    def before_call(self, case) -> None:
        if case.meta is not None and case.meta.generation.mode.is_negative:
            return  # as generated: data the schema refuses
        body = case.body
        if case.operation.label == "POST /v1/applications" and isinstance(body, dict):
            body["creator_id"] = self.tagged(body.get("creator_id"), 128)
            self.applications += 1
            platforms = body.get("platforms", [])
            if self.applications % 2 and isinstance(platforms, list):
                verified = {"platform": "x", "handle": "h", "followers": 0, "verified": True}
                body["platforms"] = [verified, *platforms[1:]]
        elif case.operation.label == "POST /v1/events":
            for event in body if isinstance(body, list) else [body]:
                if isinstance(event, dict) and isinstance(event.get("data"), dict):
                    event["id"] = self.tagged(event.get("id"), 256)
                    event["data"]["creator_id"] = self.tagged(event["data"].get("creator_id"), 128)
        elif case.operation.path == MONTH_PATH:
            creator = unquote(case.path_parameters.get("creator_id", ""))
            if creator in self.months:
                case.path_parameters["month"] = self.months[creator]
                self.wait_until_applied()

    def tagged(self, value, max_length: int):
        if not isinstance(value, str):
            return value
        return value[: max_length - len(self.tag)] + self.tag

    def wait_until_applied(self) -> None:
        """At most a few seconds: a 404 is a right answer too, only a less useful one."""
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        for _ in range(100):
            response = httpx.get(f"{self.base_url}/v1/admin/consumers", headers=headers)
            if response.status_code == 200 and all(
                group["lag"] == 0 for group in response.json()["groups"]
            ):
                return
            time.sleep(0.05)

    def after_call(self, response, case) -> None:
        super().after_call(response, case)
        if case.operation.label == "POST /v1/events" and response.status_code == 202:
            for event in case.body if isinstance(case.body, list) else [case.body]:
                if event["type"] == "post.created":  # the event that makes a creator's month
                    moment = datetime.fromisoformat(event["time"])
                    self.months[event["data"]["creator_id"]] = month_of(moment, ZONE)
        node = self.recorder.cases[case.id]
        if node.transition is not None and node.is_transition_applied:
            # "POST /v1/applications -> [201] GetApplication -> GET /v1/applications/{...}"
            source, link = node.transition.id.split(" -> ")[:2]
            Workflow.followed.add((source, link.split("] ")[1], response.status_code))


@pytest.mark.timeout(600)
def test_linked_requests_answer_as_their_schemas_say(server):
    Workflow.base_url = server
    Workflow.followed = set()
    Workflow.run(
        settings=hypothesis.settings(
            DEFAULT_STATE_MACHINE_SETTINGS,
            max_examples=SCENARIOS,
            stateful_step_count=STEPS,
            derandomize=True,
            database=None,
        )
    )
    # the links lead to real resources, from both kinds of starting points
    for source in ("POST /v1/applications", "POST /v1/events"):
        assert any(s == source and 200 <= status < 300 for s, _, status in Workflow.followed)
