"""Start-up as users expect: the embedded default migrates itself; a database behind the code
stops the process with one line; an upgrade keeps every row."""

from __future__ import annotations

import asyncio
import os
import signal

import asyncpg
import httpx
import pytest

from shared.migrate import head_revision, upgrade
from tests.brokers import free_port
from tests.system import ADMIN, ADMIN_KEY, CLI, run_cli, wait_until_ready


async def test_serve_on_a_fresh_embedded_data_dir_migrates_itself(tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CREATOR_ACTIVITY_")},
        "CREATOR_ACTIVITY_DATA_DIR": str(tmp_path),
        "CREATOR_ACTIVITY_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
    }
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        CLI, "serve", "--port", str(port), env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await wait_until_ready(client, process)
            consumers = await client.get("/v1/admin/consumers", headers=ADMIN)
            assert consumers.status_code == 200  # the bootstrap key is in the api_keys table
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()[-2000:]

    # Any other command on the same data dir finds it ready too.
    code, output = await run_cli(None, "api-keys", "list", CREATOR_ACTIVITY_DATA_DIR=str(tmp_path))
    assert code == 0 and "bootstrap-admin" in output, output


COMMANDS = [["scoring"], ["api-keys", "list"], ["replay", "--group", "badges"]]


@pytest.mark.parametrize("command", COMMANDS)
async def test_a_schema_behind_stops_the_process_with_one_line(empty_database, command):
    await asyncio.to_thread(upgrade, empty_database, "0001")
    code, output = await run_cli(empty_database, *command)
    assert code == 1
    assert output.strip().splitlines() == [
        f"error: the database schema is at 0001, this release needs {head_revision()}: "
        "run `creator-activity migrate`"
    ]

    code, output = await run_cli(empty_database, "migrate")
    assert code == 0, output
    code, output = await run_cli(empty_database, "api-keys", "list")
    assert code == 0, output


async def test_an_upgrade_from_the_foundation_keeps_every_row(empty_database):
    await asyncio.to_thread(upgrade, empty_database, "0001")
    connection = await asyncpg.connect(empty_database.replace("+asyncpg", ""))
    try:
        await connection.execute(
            """
            INSERT INTO events (event_id, content_hash, type, time, source, creator_id, data,
                                attributes)
            SELECT 'e-' || n, '\\x00', 'post.created', now(), 'square', 'c-1', '{}', '{}'
            FROM generate_series(1, 5) n;
            INSERT INTO processed_events (group_name, event_id) VALUES
                ('scoring', 'e-1'), ('scoring', 'e-2'), ('badges', 'e-5');
            INSERT INTO dead_letters (group_name, event_id, seq, type, attempts, error)
                VALUES ('scoring', 'e-3', 3, 'post.created', 3, 'boom');
            INSERT INTO consumer_positions (group_name, position) VALUES ('kafka-relay', 4);
            """
        )
    finally:
        await connection.close()

    # 0002 reshapes progress and dead letters (0003 and 0004 then restart the groups whose
    # projections they rebuild from the log: tests/test_upgrade.py)
    await asyncio.to_thread(upgrade, empty_database, "0002")

    connection = await asyncpg.connect(empty_database.replace("+asyncpg", ""))
    try:
        assert await connection.fetchval("SELECT count(*) FROM events") == 5
        markers = await connection.fetch(
            "SELECT group_name, seq FROM processed_events ORDER BY group_name, seq"
        )
        assert [tuple(r) for r in markers] == [("badges", 5), ("scoring", 1), ("scoring", 2)]
        letter = await connection.fetchrow(
            "SELECT group_name, seq, source, event_id FROM dead_letters"
        )
        assert tuple(letter) == ("scoring", 3, "square", "e-3")
        assert await connection.fetchval("SELECT position FROM relay_positions") == 4
        assert await connection.fetchval("SELECT count(*) FROM consumer_positions") == 0
        # identity is source + id now: the same id from another source is another event
        await connection.execute(
            "INSERT INTO events (event_id, content_hash, type, time, source, creator_id, data, "
            "attributes) VALUES ('e-1', '\\x00', 'post.created', now(), 'other', 'c', '{}', '{}')"
        )
    finally:
        await connection.close()
