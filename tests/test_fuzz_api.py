"""Schemathesis fuzzes every operation of the OpenAPI document against the real server
(`creator-activity serve`, a real PostgreSQL, the embedded bus), with an admin key so that the
authenticated paths are exercised, in positive mode (data the schema allows) and negative mode
(data it does not), plus its coverage phase (boundaries, missing and unexpected parts). Each
answer must be no 5xx, in the error shape when it is an error, documented (status, content
type, headers) and conforming to its documented schema; data the schema allows must not be
refused with 400/422 (the schema is as strict as the code), and data it refuses must be
refused (the code is as strict as the schema). Derandomized: the same cases every run.
"""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
import schemathesis
from hypothesis import strategies as st

from services.runtime import Runtime
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
            "stateful": {"enabled": False},
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
    the spellings RFC 3339 allows. The schema says the bounds (`x-earliest`, relative to the
    server's clock); JSON Schema cannot, so this is how the fuzzer knows them."""
    offsets = st.integers(-(14 * 60), 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
    instants = st.datetimes(
        min_value=datetime(2000, 1, 2), max_value=datetime.now() - timedelta(days=1)
    )
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
