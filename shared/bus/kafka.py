"""The Kafka bus: an outbox relay publishes the event log to a topic; consumer groups read it.

Delivery is at least once (the relay may publish an event again after a crash; a partition may
be redelivered after a rebalance). Each group records the ids it applied in the same transaction
as its effects, so a second copy changes nothing, and commits offsets only after that commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus import log as event_log
from shared.bus.processor import BatchProcessor, Handler, is_transient, sleep_unless_stopped
from shared.events import BusEvent
from shared.settings import Settings

logger = logging.getLogger(__name__)

RELAY_GROUP = "kafka-relay"  # its position in the event log is a row of consumer_positions


class _FinishBatchBeforeRevoke(ConsumerRebalanceListener):
    """Let the batch in flight commit its offsets before its partitions go elsewhere."""

    def __init__(self, in_flight: asyncio.Lock, group: str) -> None:
        self.in_flight = in_flight
        self.group = group

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.in_flight:
            logger.info(
                "partitions revoked", extra={"group": self.group, "partitions": str(revoked)}
            )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        logger.info("partitions assigned", extra={"group": self.group, "partitions": str(assigned)})


class KafkaBus:
    kind = "kafka"

    def __init__(self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        assert settings.kafka_bootstrap, "the Kafka bus needs CREATOR_ACTIVITY_KAFKA_BOOTSTRAP"
        self.settings = settings
        self.bootstrap = settings.kafka_bootstrap
        self.sessionmaker = sessionmaker
        self.topic = settings.kafka_events_topic
        self.stopping = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._offset_readers: dict[str | None, AIOKafkaConsumer] = {}

    def group_id(self, group: str) -> str:
        return f"{self.settings.kafka_group_prefix}{group}"

    async def start(self) -> None:
        self.stopping.clear()
        await self.ensure_topics()

    def stop(self) -> None:
        self.stopping.set()

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        for reader in self._offset_readers.values():
            await reader.stop()
        self._offset_readers.clear()

    async def ensure_topics(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            topics = [self.settings.kafka_events_topic, self.settings.kafka_rewards_topic]
            response = await admin.create_topics(
                [
                    NewTopic(
                        t, self.settings.kafka_partitions, self.settings.kafka_replication_factor
                    )
                    for t in topics
                ]
            )
            for topic, code, message in _topic_errors(response):
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise KafkaError(f"cannot create topic {topic}: {code} {message}")
        finally:
            await admin.close()

    async def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                enable_idempotence=self.settings.kafka_enable_idempotence,
                linger_ms=5,
            )
            await producer.start()
            self._producer = producer
        return self._producer

    # --- the outbox relay ---------------------------------------------------------------------

    async def relay(self) -> None:
        """Publish the event log in order, keyed by creator so a creator's events stay in order.

        The relay's position row is locked while a batch is published, so two relays never
        publish the same events at once; the position moves only after the broker acked.
        """
        poll = self.settings.consumer_poll_interval_ms / 1000
        delay = self.settings.consumer_retry_initial_ms / 1000
        logger.info("relay started", extra={"topic": self.topic})
        while not self.stopping.is_set():
            try:
                published = await self._relay_batch()
                delay = self.settings.consumer_retry_initial_ms / 1000
            except Exception as exc:
                if not (is_transient(exc) or isinstance(exc, KafkaError)):
                    raise
                logger.warning(
                    "relay failed, retrying", extra={"error": repr(exc), "retry_in_s": delay}
                )
                await sleep_unless_stopped(self.stopping, delay)
                delay = min(delay * 2, self.settings.consumer_retry_max_ms / 1000)
                continue
            if not published:
                await sleep_unless_stopped(self.stopping, poll)
        logger.info("relay stopped")

    async def _relay_batch(self) -> int:
        producer = await self.producer()
        async with self.sessionmaker() as session, session.begin():
            position = await event_log.lock_position(session, RELAY_GROUP, wait=False)
            if position is None:  # another relay is publishing
                return 0
            events = await event_log.read_after(session, position, self.settings.relay_batch_size)
            if not events:
                return 0
            sent = [
                await producer.send(self.topic, e.to_json(), key=e.creator_id.encode())
                for e in events
            ]
            ends: dict[int, int] = {}
            for meta in await asyncio.gather(*sent):
                ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
            await event_log.record_published(session, self.topic, ends)
            await event_log.set_position(session, RELAY_GROUP, events[-1].seq)
        return len(events)

    # --- consumer groups ----------------------------------------------------------------------

    async def consume(self, group: str, handler: Handler) -> None:
        processor = BatchProcessor(self.sessionmaker, group, handler, self.settings, self.stopping)
        in_flight = asyncio.Lock()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id(group),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.settings.consumer_batch_size,
        )
        consumer.subscribe([self.topic], listener=_FinishBatchBeforeRevoke(in_flight, group))
        await consumer.start()
        logger.info("consumer started", extra={"group": group, "bus": self.kind})
        try:
            while not self.stopping.is_set():
                records = await consumer.getmany(
                    timeout_ms=self.settings.consumer_batch_wait_ms,
                    max_records=self.settings.consumer_batch_size,
                )
                if not records:
                    continue
                async with in_flight:
                    events = _decode(group, records)
                    if not await processor.apply(events, _record_processed(group)):
                        break  # stopped: the offsets stay, the batch comes again
                    offsets = {tp: messages[-1].offset + 1 for tp, messages in records.items()}
                    try:
                        await consumer.commit(offsets)
                    except KafkaError as exc:
                        # Redelivered to the partition's next owner, which skips it.
                        logger.warning(
                            "offset commit failed", extra={"group": group, "error": repr(exc)}
                        )
        finally:
            await consumer.stop()
            logger.info("consumer stopped", extra={"group": group, "bus": self.kind})

    # --- monitoring ---------------------------------------------------------------------------

    async def lag(self, groups: tuple[str, ...]) -> dict[str, int]:
        """Events not yet relayed, plus what each group has not committed of what was relayed.

        The end of each partition comes from the relay's own acks (kept in the database), not
        from a ListOffsets request: exact, and one round trip fewer per partition.
        """
        async with self.sessionmaker() as session:
            unrelayed = await event_log.events_after(session, RELAY_GROUP)
            ends = await event_log.published_offsets(session, self.topic)
        result = {}
        for group in groups:
            reader = await self._offset_reader(self.group_id(group))
            behind = 0
            for partition, end in ends.items():
                committed = await reader.committed(TopicPartition(self.topic, partition))
                behind += max(end - (committed or 0), 0)
            result[group] = unrelayed + behind
        return result

    async def _offset_reader(self, group_id: str | None) -> AIOKafkaConsumer:
        """A consumer that never subscribes: it reads a group's committed offsets, or (without
        a group) the cluster's metadata."""
        reader = self._offset_readers.get(group_id)
        if reader is None:
            reader = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, group_id=group_id, enable_auto_commit=False
            )
            await reader.start()
            self._offset_readers[group_id] = reader
        return reader

    async def check(self) -> None:
        reader = await self._offset_reader(None)
        if self.topic not in await reader.topics():
            raise KafkaError(f"topic {self.topic} is missing")


def _record_processed(group: str):
    async def record_progress(session: AsyncSession, events: Sequence[BusEvent]) -> list[BusEvent]:
        return await event_log.record_processed(session, group, events)

    return record_progress


def _decode(group: str, records: dict) -> list[BusEvent]:
    events = []
    for tp, messages in records.items():
        for message in messages:
            try:
                events.append(BusEvent.from_json(message.value))
            except Exception as exc:  # not ours to apply; say so loudly and go on
                logger.error(
                    "undecodable message skipped",
                    extra={
                        "group": group,
                        "topic": tp.topic,
                        "partition": tp.partition,
                        "offset": message.offset,
                        "error": repr(exc),
                    },
                )
    return events


def _topic_errors(response) -> list[tuple[str, int, str | None]]:
    return [(e[0], e[1], e[2] if len(e) > 2 else None) for e in response.topic_errors]
