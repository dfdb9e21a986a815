"""The Kafka bus: outbox relays publish the event log (and the rewards) to topics; consumer
groups read the events topic.

Delivery is at least once (the relay may publish an event again after a crash; a partition may
be redelivered after a rebalance). Each group marks the events it applied in the same
transaction as its effects (shared/bus/positions.py), so a second copy changes nothing, and
commits offsets only after that commit. The log stays the source of truth: a group that finds
events missing from the topic (retention, a broker that lost its data, an event the broker
refused) applies them from the log.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CorruptRecordException,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAlreadyExistsError,
    UnsupportedForMessageFormatError,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus import dead_letters, positions, relay
from shared.bus.base import Handler
from shared.bus.processor import (
    EVENTS_PARKED,
    BatchProcessor,
    is_transient,
    sleep_unless_stopped,
)
from shared.bus.relay import EventLogOutbox, Outbox, OutboxMessage
from shared.events import BusEvent
from shared.settings import Settings

logger = logging.getLogger(__name__)

# The broker will never take this event, however often it is sent.
REFUSED_FOR_GOOD = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    CorruptRecordException,
    UnsupportedForMessageFormatError,
)


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
        self._producer_lock = asyncio.Lock()
        self._metadata: AIOKafkaConsumer | None = None
        # Per topic, the highest offset the broker acked to this process in each partition:
        # an ack at or below it means the partition started again (the broker lost its data).
        self._acked: dict[str, dict[int, int]] = {}
        self._lost: set[str] = set()

    def group_id(self, group: str) -> str:
        return f"{self.settings.kafka_group_prefix}{group}"

    async def start(self) -> None:
        self.stopping.clear()
        await self.ensure_topics()
        if self._metadata is None:
            # A client in no group, for the readiness check.
            self._metadata = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
            await self._metadata.start()

    def stop(self) -> None:
        self.stopping.set()

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._metadata is not None:
            await self._metadata.stop()
            self._metadata = None

    async def ensure_topics(self) -> None:
        """Create the topics with their partitions, replication and retention (an existing
        topic keeps its own configuration)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            topics = [self.settings.kafka_events_topic, self.settings.kafka_rewards_topic]
            response = await admin.create_topics(
                [
                    NewTopic(
                        topic,
                        self.settings.kafka_partitions,
                        self.settings.kafka_replication_factor,
                        topic_configs={"retention.ms": str(self.settings.kafka_retention_ms)},
                    )
                    for topic in topics
                ]
            )
            for topic, code, message in _topic_errors(response):
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise KafkaError(f"cannot create topic {topic}: {code} {message}")
        finally:
            await admin.close()

    async def producer(self) -> AIOKafkaProducer:
        async with self._producer_lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    acks="all",
                    enable_idempotence=self.settings.kafka_enable_idempotence,
                    max_request_size=self.settings.kafka_max_request_bytes,
                    linger_ms=5,
                )
                await producer.start()
                self._producer = producer
            return self._producer

    # --- the outbox relays ---------------------------------------------------------------------

    async def relay(self) -> None:
        """Publish the event log in order, keyed by creator so a creator's events stay in order."""
        await self.relay_outbox(EventLogOutbox(self.topic))

    async def relay_outbox(self, outbox: Outbox) -> None:
        """Publish an outbox to its topic in order, until stopped.

        The relay's position row is locked while a batch is published, so two relays never
        publish the same messages at once; the position moves only after the broker acked.
        """
        poll = self.settings.consumer_poll_interval_ms / 1000
        delay = self.settings.consumer_retry_initial_ms / 1000
        check_every = self.settings.consumer_catch_up_after_ms / 1000
        # an empty topic is looked at as often as the groups look for missing events
        next_check = time.monotonic() + check_every
        logger.info("relay started", extra={"topic": outbox.topic})
        while not self.stopping.is_set():
            try:
                if outbox.topic in self._lost:
                    await self._publish_again(outbox)
                elif time.monotonic() >= next_check:
                    next_check = time.monotonic() + check_every
                    if await self._broker_lost(outbox):
                        await self._publish_again(outbox)
                published = await self._relay_batch(outbox)
                delay = self.settings.consumer_retry_initial_ms / 1000
            except Exception as exc:
                if not (is_transient(exc) or isinstance(exc, KafkaError)):
                    raise
                logger.warning(
                    "relay failed, retrying",
                    extra={"topic": outbox.topic, "error": repr(exc), "retry_in_s": delay},
                )
                await sleep_unless_stopped(self.stopping, delay)
                delay = min(delay * 2, self.settings.consumer_retry_max_ms / 1000)
                continue
            if not published:
                await sleep_unless_stopped(self.stopping, poll)
        logger.info("relay stopped", extra={"topic": outbox.topic})

    async def _relay_batch(self, outbox: Outbox) -> int:
        producer = await self.producer()
        async with self.sessionmaker() as session, session.begin():
            position = await relay.claim(session, outbox.topic, await outbox.start(session))
            if position is None:  # another relay is publishing
                return 0
            messages = await outbox.read(session, position, self.settings.relay_batch_size)
            if not messages:
                return 0
            results = await self._publish(producer, outbox.topic, messages)
            for message, result in zip(messages, results, strict=True):
                if isinstance(result, REFUSED_FOR_GOOD):
                    # Parked for the record (the event log's groups apply it from the log).
                    logger.error(
                        "the broker refuses this message for good; parked",
                        extra={
                            "topic": outbox.topic,
                            "position": message.position,
                            "message_id": message.id,
                            "error": repr(result),
                        },
                    )
                    await outbox.park(session, message, repr(result))
                    EVENTS_PARKED.labels(outbox.dead_letter_group).inc()
                elif isinstance(result, BaseException):
                    raise result  # transient: the whole batch again, readers dedupe
            await relay.move(session, outbox.topic, messages[-1].position)
        return len(messages)

    async def _publish(
        self, producer: AIOKafkaProducer, topic: str, messages: list[OutboxMessage]
    ) -> list[BaseException | None]:
        """Send in outbox order (a partition keeps it), then wait for every ack; the outcome
        of each message, None when the broker has it."""
        pending: list[asyncio.Future | BaseException] = []
        for message in messages:
            try:
                pending.append(await producer.send(topic, message.value, key=message.key))
            except REFUSED_FOR_GOOD as exc:  # e.g. over max_request_size: refused before sending
                pending.append(exc)
        futures = [p for p in pending if isinstance(p, asyncio.Future)]
        results = await asyncio.gather(*futures, return_exceptions=True)
        self._note_acks(topic, results)
        acks = iter(results)
        return [p if isinstance(p, BaseException) else _failure(next(acks)) for p in pending]

    # --- a broker that lost its data ----------------------------------------------------------
    # A broker restarted without its storage (or a topic deleted) has lost what the relay
    # published, and the consumers' committed offsets: the groups apply the missing events from
    # the log (`_keep_floor`), but readers of an outbox's topic (the rewards) would never see
    # them. The relay notices (an offset it was acked is gone), creates the topics again, and
    # publishes its outbox again from the start; readers dedupe by id.

    def _note_acks(self, topic: str, results: list) -> None:
        acked = self._acked.setdefault(topic, {})
        for result in results:
            if isinstance(result, BaseException):
                continue
            if result.offset <= acked.get(result.partition, -1):
                self._lost.add(topic)  # the partition's offsets started again
            acked[result.partition] = max(result.offset, acked.get(result.partition, -1))

    async def _broker_lost(self, outbox: Outbox) -> bool:
        """True when the topic is gone, or when every partition of it is empty although the
        relay has published to it: the broker lost its data while this process published
        nothing. (End offsets are not compared with the acks: some brokers, Tansu among them,
        report less than the high watermark; an ack below an earlier one is the sign relied on,
        `_note_acks`.)"""
        try:
            if outbox.topic not in await self._metadata.topics():  # fresh metadata
                return True
            if self._acked.get(outbox.topic):
                return False  # acks are watched
            partitions = self._metadata.partitions_for_topic(outbox.topic) or set()
            topic_partitions = [TopicPartition(outbox.topic, p) for p in partitions]
            ends = await self._metadata.end_offsets(topic_partitions) if partitions else {}
        except KafkaError as exc:
            logger.warning("cannot read the end offsets", extra={"error": repr(exc)})
            return False
        if any(ends.values()):
            return False
        async with self.sessionmaker() as session:
            published = await relay.published_up_to(session, outbox.topic)
            return published > await outbox.start(session)

    async def _publish_again(self, outbox: Outbox) -> None:
        await self.ensure_topics()
        async with self.sessionmaker() as session, session.begin():
            start = await outbox.start(session)
            position = await relay.claim(session, outbox.topic, start)
            if position is None:
                return  # another relay holds it; it will find the loss too
            await relay.move(session, outbox.topic, start)
        self._acked.pop(outbox.topic, None)
        self._lost.discard(outbox.topic)
        logger.warning(
            "the broker lost what the relay had published: publishing the outbox again",
            extra={"topic": outbox.topic, "from": start, "was_at": position},
        )

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
            session_timeout_ms=self.settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=self.settings.kafka_heartbeat_interval_ms,
        )
        consumer.subscribe([self.topic], listener=_FinishBatchBeforeRevoke(in_flight, group))
        await consumer.start()
        floor_keeper = asyncio.create_task(self._keep_floor(processor), name=f"floor:{group}")
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
                    events = await self._decode(group, records)
                    if events is None or not await processor.apply(
                        events, processor.take_any_order
                    ):
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
            floor_keeper.cancel()
            await asyncio.gather(floor_keeper, return_exceptions=True)
            await consumer.stop()
            logger.info("consumer stopped", extra={"group": group, "bus": self.kind})

    async def _decode(self, group: str, records: dict) -> list[BusEvent] | None:
        """The batch's events; a message that cannot be read is parked, never skipped.
        None if stopped before the parking could be written."""
        events, unreadable = [], []
        for tp, messages in records.items():
            for message in messages:
                try:
                    events.append(BusEvent.from_json(message.value))
                except Exception as exc:
                    logger.error(
                        "undecodable message parked",
                        extra={
                            "group": group,
                            "topic": tp.topic,
                            "partition": tp.partition,
                            "offset": message.offset,
                            "error": repr(exc),
                        },
                    )
                    unreadable.append((message.value, repr(exc)))
        if not unreadable:
            return events
        delay = self.settings.consumer_retry_initial_ms / 1000
        while not self.stopping.is_set():
            try:
                async with self.sessionmaker() as session, session.begin():
                    for payload, error in unreadable:
                        await dead_letters.park_undecodable(session, group, payload, error)
                return events
            except Exception as exc:
                if not is_transient(exc):
                    raise
                await sleep_unless_stopped(self.stopping, delay)
                delay = min(delay * 2, self.settings.consumer_retry_max_ms / 1000)
        return None

    async def _keep_floor(self, processor: BatchProcessor) -> None:
        """Move the group's floor up behind its markers (pruning them), and when it stays
        stuck below what the relay has published, apply the missing events from the log."""
        group = processor.group
        interval = self.settings.consumer_floor_interval_ms / 1000
        heal_after = self.settings.consumer_catch_up_after_ms / 1000
        last_floor, stuck_since = None, time.monotonic()
        while not self.stopping.is_set():
            await sleep_unless_stopped(self.stopping, interval)
            try:
                async with self.sessionmaker() as session, session.begin():
                    floor = await positions.advance_floor(session, group)
                    published = await relay.published_up_to(session, self.topic)
            except Exception as exc:
                logger.warning("cannot move the floor", extra={"group": group, "error": repr(exc)})
                continue
            if floor is None:  # another process of the group is at it
                continue
            if floor != last_floor or floor >= published:
                last_floor, stuck_since = floor, time.monotonic()
                continue
            if time.monotonic() - stuck_since >= heal_after:
                logger.warning(
                    "events missing from the topic: catching up from the log",
                    extra={"group": group, "floor": floor, "published": published},
                )
                applied = await processor.catch_up(up_to=published)
                logger.info("caught up from the log", extra={"group": group, "events": applied})
                stuck_since = time.monotonic()

    # --- monitoring ---------------------------------------------------------------------------

    async def lag(self, groups: tuple[str, ...]) -> dict[str, int]:
        """Counted from the log, as on the embedded bus: what each group has not applied,
        whether or not the relay has published it yet."""
        async with self.sessionmaker() as session:
            return {group: await positions.lag(session, group) for group in groups}

    async def check(self) -> None:
        if self._metadata is None:
            raise KafkaError("the bus is not started")
        if self.topic not in await self._metadata.topics():
            raise KafkaError(f"topic {self.topic} is missing")


def _failure(ack: object) -> BaseException | None:
    return ack if isinstance(ack, BaseException) else None


def _topic_errors(response) -> list[tuple[str, int, str | None]]:
    return [(e[0], e[1], e[2] if len(e) > 2 else None) for e in response.topic_errors]
