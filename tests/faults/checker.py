"""The history checker: after a fault scenario, was anything lost, or applied twice?

As Jepsen's checkers do, it judges the system by what its clients were told (the ledger):
- nothing lost: every acknowledged event is in the log, once, as sent; no event is there that
  no client was told about; every consumer group applied every event (lag 0, nothing parked);
- nothing applied twice, nothing applied wrong: every projection equals the one a CLEAN run
  computes over the acknowledged events alone (a fresh database, the same events in the same
  log order, one in-process run, no fault): each creator's monthly stats, the rankings, the
  settlements, the rewards, the badges, the streaks; the vouchers number exactly
  min(cap, creators who qualify), all to creators who qualify;
- what readers outside see: the rewards feed gives each reward exactly once; the rewards topic
  (Kafka) carries every reward (by id; copies allowed) and nothing else.

A settlement made while its month's late events were arriving includes every event
acknowledged before the request and maybe some after it: the clean run settles at the first
point of that window where its ranking equals the one the system froze (linearizable: the
settlement saw the month as it was at one moment of the request), or reports the difference.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from shared.db import to_asyncpg_url
from shared.events import DATA_MODELS
from tests.conftest import make_settings, running
from tests.faults.cluster import Cluster
from tests.faults.generator import MONTHS, PROGRAM_SETTINGS, SOURCE, VOUCHER_CAP, form_of
from tests.faults.infra import Postgres
from tests.faults.ledger import Ledger
from tests.system import ADMIN

logger = logging.getLogger(__name__)

GROUPS = ("scoring", "badges")
VOUCHER = "new_creator_voucher"
UNCAPPED_POOL = Decimal("1000000.00")  # the clean run pays every qualifying creator a voucher
SHOWN = 15  # differences shown per projection


# --- the projections ---------------------------------------------------------------------------


@dataclass
class Projections:
    """What the system computed, keyed for comparison."""

    creator_months: dict[tuple, tuple] = field(default_factory=dict)
    settlement_entries: dict[tuple, tuple] = field(default_factory=dict)
    rankings: dict[str, list[tuple]] = field(default_factory=dict)  # month -> entries (API)
    rewards: dict[tuple, tuple] = field(default_factory=dict)  # (creator, kind, month) -> …
    badges: set[tuple] = field(default_factory=set)
    settled_months: dict[tuple, bool] = field(default_factory=dict)
    vouchers_issued: int = 0  # the pool's counter
    errors: list[str] = field(default_factory=list)  # reads that failed

    def without_vouchers(self) -> dict[tuple, tuple]:
        return {k: v for k, v in self.rewards.items() if k[1] != VOUCHER}

    def voucher_holders(self) -> set[str]:
        return {k[0] for k in self.rewards if k[1] == VOUCHER}


async def _fetch(url: str, query: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        return await connection.fetch(query)
    finally:
        await connection.close()


def _entry(e: dict[str, Any]) -> tuple:
    return (
        e["rank"],
        e["creator_id"],
        e["score"],
        e["qualifying_posts"],
        e["active_days"],
        e["interactions"],
        e["quality"],
        e["eligible"],
        e["payout"],
    )


async def projections(database_url: str, client: httpx.AsyncClient) -> Projections:
    """The projections of a database; rankings through the read API of `client`."""
    p = Projections()
    for r in await _fetch(
        database_url,
        "SELECT creator_id, month, posts, qualifying_posts, active_days, interactions, quality"
        " FROM scoring_creator_months",
    ):
        p.creator_months[(r[0], r[1])] = tuple(r[2:])
    for r in await _fetch(
        database_url,
        "SELECT month, creator_id, rank, score, qualifying_posts, active_days, interactions,"
        " quality, eligible, payout FROM scoring_settlement_entries",
    ):
        p.settlement_entries[(r[0], r[1])] = tuple(r[2:])
    for r in await _fetch(
        database_url,
        "SELECT creator_id, kind, month, id, amount, currency, count(*) OVER"
        " (PARTITION BY creator_id, kind, month) FROM badges_rewards",
    ):
        p.rewards[(r[0], r[1], r[2])] = (r[3], r[4], r[5], r[6])  # r[6]: copies (must be 1)
    p.badges = {
        tuple(r) for r in await _fetch(database_url, "SELECT creator_id, kind FROM badges_badges")
    }
    for r in await _fetch(
        database_url, "SELECT creator_id, month, active FROM badges_settled_months"
    ):
        p.settled_months[(r[0], r[1])] = r[2]
    pool = await _fetch(database_url, "SELECT issued FROM badges_voucher_pool")
    p.vouchers_issued = pool[0][0] if pool else 0
    for month in MONTHS:
        response = await client.get(f"/v1/rankings/{month}", params={"limit": 500}, headers=ADMIN)
        if response.status_code != 200:
            p.errors.append(f"GET /v1/rankings/{month}: {response.status_code} {response.text}")
            p.rankings[month] = []
            continue
        p.rankings[month] = [_entry(e) for e in response.json()["entries"]]
    return p


def differences(name: str, got: dict, expected: dict) -> list[str]:
    """Readable differences of two keyed projections: missing, unexpected, different."""
    lines = []
    missing = sorted(expected.keys() - got.keys(), key=str)
    extra = sorted(got.keys() - expected.keys(), key=str)
    changed = sorted((k for k in got.keys() & expected.keys() if got[k] != expected[k]), key=str)
    for k in missing[:SHOWN]:
        lines.append(f"{name}: missing {k} (clean run: {expected[k]})")
    for k in extra[:SHOWN]:
        lines.append(f"{name}: unexpected {k} = {got[k]}")
    for k in changed[:SHOWN]:
        lines.append(f"{name}: {k} is {got[k]}, clean run: {expected[k]}")
    hidden = len(missing) + len(extra) + len(changed) - len(lines)
    if hidden > 0:
        lines.append(f"{name}: … and {hidden} more differences")
    return lines


def compare(got: Projections, clean: Projections, cap: int) -> list[str]:
    problems = [f"system: {e}" for e in got.errors] + [f"clean run: {e}" for e in clean.errors]
    problems += differences("scoring_creator_months", got.creator_months, clean.creator_months)
    problems += differences("settlement", got.settlement_entries, clean.settlement_entries)
    for month in MONTHS:
        got_ranking = dict(enumerate(got.rankings[month]))
        clean_ranking = dict(enumerate(clean.rankings[month]))
        problems += differences(f"ranking {month}", got_ranking, clean_ranking)
    problems += differences("rewards", got.without_vouchers(), clean.without_vouchers())
    problems += differences("badges", dict.fromkeys(got.badges), dict.fromkeys(clean.badges))
    problems += differences("settled months", got.settled_months, clean.settled_months)
    qualifying = clean.voucher_holders()
    holders = got.voucher_holders()
    if len(holders) != min(cap, len(qualifying)):
        problems.append(
            f"vouchers: {len(holders)} issued, expected min({cap}, {len(qualifying)} qualifying)"
        )
    if not holders <= qualifying:
        problems.append(f"vouchers to creators who do not qualify: {sorted(holders - qualifying)}")
    if got.vouchers_issued != len(holders):
        problems.append(f"voucher pool says {got.vouchers_issued} issued, rewards {len(holders)}")
    copies = [k for k, v in got.rewards.items() if v[3] != 1]
    if copies:
        problems.append(f"rewards issued more than once: {copies[:SHOWN]}")
    return problems


# --- nothing lost ----------------------------------------------------------------------------


def _same_event(sent: dict[str, Any], row: asyncpg.Record) -> bool:
    """Stored as sent: the data as the contract reads it (defaults filled in)."""
    data = DATA_MODELS[sent["type"]].model_validate(sent["data"]).model_dump(exclude_none=True)
    return (
        sent["type"] == row["type"]
        and datetime.fromisoformat(sent["time"]) == row["time"]
        and sent["data"]["creator_id"] == row["creator_id"]
        and data == orjson.loads(row["data"])
    )


async def read_log(database_url: str) -> list[asyncpg.Record]:
    return await _fetch(
        database_url,
        "SELECT seq, source, event_id, type, time, creator_id, data FROM events ORDER BY seq",
    )


async def nothing_lost(cluster: Cluster, ledger: Ledger, log: list[asyncpg.Record]) -> list[str]:
    problems = [f"client saw: {v}" for v in ledger.violations[:SHOWN]]
    stored = {(r["source"], r["event_id"]): r for r in log}
    for key, sent in ledger.events.items():
        row = stored.get(key)
        if row is None:
            problems.append(f"acknowledged event lost: {key}")
        elif not _same_event(sent, row):
            problems.append(f"acknowledged event stored otherwise: {key}: {dict(row)}")
    unknown = [k for k, r in stored.items() if r["source"] == SOURCE and k not in ledger.events]
    if unknown:
        problems.append(f"events in the log no client was told about: {unknown[:SHOWN]}")
    certified = {r["creator_id"]: r for r in log if r["type"] == "creator.certified"}
    if certified.keys() != ledger.certifications.keys():
        problems.append(
            "certifications: log has "
            f"{sorted(certified.keys() - ledger.certifications.keys())} more, "
            f"{sorted(ledger.certifications.keys() - certified.keys())} fewer than the ledger"
        )
    settled_parts = [orjson.loads(r["data"])["month"] for r in log if r["type"] == "month.settled"]
    if sorted(set(settled_parts)) != sorted(ledger.settlements):
        problems.append(
            f"month.settled in the log for {settled_parts}, ledger: {ledger.settlements}"
        )
    for month, settlement in ledger.settlements.items():
        first = settlement.answers[0]
        if any(answer != first for answer in settlement.answers):
            problems.append(f"settling {month} at once gave different answers")
    # every group applied every event: the API's lag and the floors and markers themselves
    lags = await cluster.lags()
    if any(lags.values()):
        problems.append(f"lag after the scenario: {lags}")
    top = log[-1]["seq"] if log else 0
    for group in GROUPS:
        rows = await _fetch(
            to_asyncpg_url(cluster.database_url),
            "SELECT count(*) FROM events e WHERE e.seq > coalesce((SELECT position FROM"
            f" consumer_positions WHERE group_name = '{group}'), 0) AND NOT EXISTS (SELECT 1"
            f" FROM processed_events m WHERE m.group_name = '{group}' AND m.seq = e.seq)",
        )
        if rows[0][0]:
            problems.append(f"{group} has not applied {rows[0][0]} events (log ends at {top})")
    parked = await _fetch(
        to_asyncpg_url(cluster.database_url), "SELECT group_name, seq, error FROM dead_letters"
    )
    if parked:
        problems.append(f"dead letters: {[tuple(r) for r in parked][:SHOWN]}")
    return problems


# --- what readers outside see ----------------------------------------------------------------


async def feed_ids(cluster: Cluster) -> list[str]:
    """Every reward id the feed hands out, following its cursor to the end."""
    ids, after = [], None
    while True:
        params = {"limit": 1000} | ({"after": after} if after else {})
        response = await cluster.get("badges", "/v1/rewards/feed", **params)
        assert response.status_code == 200, response.text
        body = response.json()
        if not body["items"]:
            return ids
        ids += [item["id"] for item in body["items"]]
        after = body["next"]


async def read_topic(
    bootstrap: str, topic: str, enough: Callable[[list[ConsumerRecord]], bool]
) -> list[ConsumerRecord]:
    """The topic's messages, read from the first offset until `enough` of them were seen or
    nothing more came for a while. (Tansu reports end offsets below the high watermark: they
    cannot say where the topic ends.) A partition whose offset is out of range is read again
    from its first offset, never skipped."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        await consumer.topics()  # fresh metadata
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        assert partitions, f"topic {topic} is not in the broker's metadata"
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        messages: list[ConsumerRecord] = []
        quiet_since = time.monotonic()
        while not enough(messages) and time.monotonic() - quiet_since < 5:
            batches = await consumer.getmany(*partitions, timeout_ms=500)
            for batch in batches.values():
                messages += batch
                quiet_since = time.monotonic()
        return messages
    finally:
        await consumer.stop()


async def topic_ids(bootstrap: str, topic: str, expected: set[str]) -> list[str]:
    """The reward ids on the rewards topic (read until every expected one was seen)."""

    def ids(messages: list[ConsumerRecord]) -> list[str]:
        return [orjson.loads(m.value)["id"] for m in messages]

    return ids(await read_topic(bootstrap, topic, lambda messages: expected <= set(ids(messages))))


async def last_offsets(bootstrap: str, topic: str, expected: dict[int, int]) -> dict[int, int]:
    """Partition -> the last offset the topic holds in it (read until `expected` is reached)."""

    def last(messages: list[ConsumerRecord]) -> dict[int, int]:
        offsets: dict[int, int] = {}
        for m in messages:
            offsets[m.partition] = max(m.offset, offsets.get(m.partition, -1))
        return offsets

    def enough(messages: list[ConsumerRecord]) -> bool:
        seen = last(messages)
        return all(seen.get(p, -1) >= offset for p, offset in expected.items())

    return last(await read_topic(bootstrap, topic, enough))


async def readers_outside(
    cluster: Cluster, reward_ids: set[str], *, rewards_topic: bool = True
) -> list[str]:
    problems = []
    feed = await feed_ids(cluster)
    twice = sorted({i for i in feed if feed.count(i) > 1})
    if twice:
        problems.append(f"rewards feed: given more than once: {twice[:SHOWN]}")
    if set(feed) != reward_ids:
        problems.append(
            f"rewards feed: missing {sorted(reward_ids - set(feed))[:SHOWN]}, "
            f"unknown {sorted(set(feed) - reward_ids)[:SHOWN]}"
        )
    if cluster.bus == "kafka" and rewards_topic:
        published = set(await topic_ids(cluster.bootstrap, cluster.rewards_topic, reward_ids))
        if published != reward_ids:
            problems.append(
                f"rewards topic: missing {sorted(reward_ids - published)[:SHOWN]}, "
                f"unknown {sorted(published - reward_ids)[:SHOWN]}"
            )
    return problems


# --- the clean run ---------------------------------------------------------------------------


class CleanRun:
    """The acknowledged events again, on a fresh database, in the order the system's log has
    them, in one process with no fault: what every projection should be."""

    def __init__(self, postgres: Postgres, ledger: Ledger, log: list[asyncpg.Record]) -> None:
        self.postgres = postgres
        self.ledger = ledger
        self.log = log
        self.pending: list[dict[str, Any]] = []
        self.settled: set[str] = set()
        self.notes: list[str] = []

    async def run(self) -> Projections:
        url = to_asyncpg_url(await self.postgres.create_database())
        program = PROGRAM_SETTINGS | {"new_creator_pool": UNCAPPED_POOL}
        settings = make_settings("embedded", None, **program)
        async with running(settings, url) as system:
            self.system = system
            await self._replay()
            return await projections(url, system.client)

    async def _replay(self) -> None:
        settled_at = {
            orjson.loads(r["data"])["month"]: r["seq"]
            for r in self.log
            if r["type"] == "month.settled"
        }
        windows = {month: self._window(month, seq) for month, seq in settled_at.items()}
        for row in self.log:
            for month, window in windows.items():
                if month not in self.settled and row["seq"] in window:
                    await self._settle_if_it_matches(month)
            if row["source"] == SOURCE:
                sent = self.ledger.events.get((row["source"], row["event_id"]))
                if sent is not None:  # one no client was told about is reported apart
                    self.pending.append(sent)
            elif row["type"] == "creator.certified":
                await self._certify(row["creator_id"])
            elif row["type"] == "month.settled":
                month = orjson.loads(row["data"])["month"]
                if month not in self.settled:
                    await self._settle(month)
        await self._flush()

    def _window(self, month: str, settled_seq: int) -> set[int]:
        """The log positions where the settlement may have been taken: before each event of
        the month acknowledged after the settle request was sent and logged before it."""
        before = self.ledger.settlements[month].acked_before
        events = self.ledger.events
        return {
            r["seq"]
            for r in self.log
            if r["seq"] < settled_seq
            and r["source"] == SOURCE
            and (r["source"], r["event_id"]) not in before
            and events.get((r["source"], r["event_id"]), {"time": ""})["time"].startswith(month)
        }

    async def _flush(self, *, wait: bool = True) -> None:
        while self.pending:
            batch, self.pending = self.pending[:500], self.pending[500:]
            response = await self.system.post_events(batch)
            assert response.status_code == 202, response.text
        if wait:
            await self._wait_until_processed()

    async def _wait_until_processed(self, within: float = 300) -> None:
        """Until both groups applied every event (polled gently: the consumers share this
        process's event loop)."""
        deadline = time.monotonic() + within
        while any((await self.system.lags()).values()):
            assert time.monotonic() < deadline, "the clean run did not catch up"
            await asyncio.sleep(0.25)

    async def _certify(self, creator_id: str) -> None:
        await self._flush(wait=False)  # the log's order; nothing waits on the consumers
        certification = self.ledger.certifications[creator_id]
        client = self.system.client
        applied = await client.post("/v1/applications", json=form_of(creator_id), headers=ADMIN)
        assert applied.status_code == 201, applied.text
        approved = await client.post(
            f"/v1/admin/applications/{applied.json()['id']}/approve",
            json={"certified_at": certification.certified_at},
            headers=ADMIN,
        )
        assert approved.status_code == 200, approved.text

    async def _settle_if_it_matches(self, month: str) -> None:
        await self._flush()
        response = await self.system.client.get(
            f"/v1/rankings/{month}", params={"limit": 500}, headers=ADMIN
        )
        now = [_entry(e)[:-1] for e in response.json()["entries"]]
        frozen = [_entry(e)[:-1] for e in self.ledger.settlements[month].answers[0]["entries"]]
        if now == frozen:
            self.notes.append(f"{month} settled by the system with late events: matched")
            await self._settle(month)

    async def _settle(self, month: str) -> None:
        await self._flush()
        response = await self.system.client.post(f"/v1/admin/months/{month}/settle", headers=ADMIN)
        assert response.status_code == 200, response.text
        self.settled.add(month)
        await self._wait_until_processed()


# --- all of it ---------------------------------------------------------------------------------


async def check(
    cluster: Cluster, ledger: Ledger, postgres: Postgres, *, rewards_topic: bool = True
) -> Projections:
    """Every check above; an AssertionError listing every problem found. Returns the
    system's projections (to compare a replay against)."""
    started = time.monotonic()
    await cluster.wait_caught_up()
    logger.warning("caught up in %.1f s", time.monotonic() - started)
    database_url = to_asyncpg_url(cluster.database_url)
    log = await read_log(database_url)
    problems = await nothing_lost(cluster, ledger, log)
    scoring = cluster.live("scoring")[0]
    async with httpx.AsyncClient(base_url=scoring.url, timeout=30) as client:
        got = await projections(database_url, client)
    started = time.monotonic()
    clean = await CleanRun(postgres, ledger, log).run()
    logger.warning("clean run in %.1f s", time.monotonic() - started)
    problems += compare(got, clean, cap=VOUCHER_CAP)
    reward_ids = {v[0] for v in got.rewards.values()}
    problems += await readers_outside(cluster, reward_ids, rewards_topic=rewards_topic)
    assert not problems, "\n".join(problems)
    return got


async def unchanged(cluster: Cluster, before: Projections) -> None:
    """After a replay: the same projections as before it."""
    await cluster.wait_caught_up()
    scoring = cluster.live("scoring")[0]
    async with httpx.AsyncClient(base_url=scoring.url, timeout=30) as client:
        after = await projections(to_asyncpg_url(cluster.database_url), client)
    problems = compare(after, before, cap=len(before.voucher_holders()))
    problems += differences("vouchers", after.rewards, before.rewards)
    assert not problems, "\n".join(problems)
