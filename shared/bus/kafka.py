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
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAlreadyExistsError,
    UnsupportedForMessageFormatError,
)
from aiokafka.structs import RecordMetadata
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus import dead_letters, positions, relay
from shared.bus import log as event_log
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

# How long a producer that cannot flush (the broker away) may take to stop.
PRODUCER_STOP_TIMEOUT_S = 5

# How long the relay's check for a lost broker may take before it gives up until the next.
CHECK_TIMEOUT_S = 10

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
        # Topics whose outbox starts again after a loss, once they are ready for it.
        self._starting_again: set[str] = set()

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
            await self._drop_producer(self._producer)
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

    async def _drop_producer(self, producer: AIOKafkaProducer) -> None:
        """Stop the producer; the next publish starts another. `stop()` flushes first and
        waits forever for a batch the broker never acks (aio-libs/aiokafka#1101): after a
        moment its sender and connections are closed without the flush (the batch is
        published again from the outbox)."""
        async with self._producer_lock:
            if self._producer is producer:
                self._producer = None
        try:
            await asyncio.wait_for(producer.stop(), PRODUCER_STOP_TIMEOUT_S)
        except Exception as exc:  # TimeoutError included
            logger.warning("the producer did not stop in time; closed", extra={"error": repr(exc)})
            await producer._sender.close()  # no public way: cancels its sender task
            await producer.client.close()

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
        # an idle topic is looked at as often as the groups look for missing events
        next_check = time.monotonic() + check_every
        logger.info("relay started", extra={"topic": outbox.topic})
        while not self.stopping.is_set():
            try:
                if outbox.topic in self._starting_again:
                    await self._ready_to_publish_again(outbox.topic)
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
            await outbox.find_end(session)  # first: before the claim writes
            position = await relay.claim(session, outbox.topic, await outbox.start(session))
            if position is None:  # another relay is publishing
                return 0
            messages = await outbox.read(session, position, self.settings.relay_batch_size)
            if not messages:
                return 0
            results, acks = await self._publish(producer, outbox.topic, messages)
            # Before anything else: acks of a batch that failed in part still tell of a loss.
            if await relay.note_acks(session, outbox.topic, _offsets_by_partition(acks)):
                start = await outbox.start(session)
                await relay.start_again(session, outbox.topic, start)
                lost = {"topic": outbox.topic, "from": start, "was_at": position}
            else:
                lost = None
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
        if lost is not None:
            logger.warning(_LOST, extra=lost | {"seen": "an offset acked again"})
            self._starting_again.add(outbox.topic)
        return len(messages)

    async def _publish(
        self, producer: AIOKafkaProducer, topic: str, messages: list[OutboxMessage]
    ) -> tuple[list[BaseException | None], list[RecordMetadata]]:
        """Send in outbox order (a partition keeps it), then wait for every ack; the outcome
        of each message (None when the broker has it), and the acks."""
        pending: list[asyncio.Future | BaseException] = []
        timeout = self.settings.kafka_publish_timeout_ms / 1000
        try:
            # aiokafka waits forever for a batch sent as the broker went away (its retries never
            # end: aio-libs/aiokafka#1101): the relay would hold its position and publish nothing
            async with asyncio.timeout(timeout):
                for message in messages:
                    try:
                        pending.append(await producer.send(topic, message.value, key=message.key))
                    except REFUSED_FOR_GOOD as exc:  # e.g. over max_request_size: not sent
                        pending.append(exc)
                futures = [p for p in pending if isinstance(p, asyncio.Future)]
                results = await asyncio.gather(*futures, return_exceptions=True)
        except TimeoutError:
            await self._drop_producer(producer)
            raise KafkaTimeoutError(
                f"the broker acked {len(messages)} messages to {topic} in no less than {timeout} s"
            ) from None
        outcomes = iter(results)
        return (
            [p if isinstance(p, BaseException) else _failure(next(outcomes)) for p in pending],
            [r for r in results if not isinstance(r, BaseException)],
        )

    # --- a broker that lost its data ----------------------------------------------------------
    # A broker restarted without its storage (or a topic deleted and created again) has lost
    # what the relay published, and the consumers' committed offsets: the groups apply the
    # missing events from the log (`_keep_floor`), but readers of an outbox's topic (the
    # rewards) would never see them. The relays keep the highest offset the broker acked in
    # each partition (relay.note_acks, in the database: every process, every restart); the
    # loss shows as
    # - an ack at or below that offset: the partition's offsets started again (`_relay_batch`);
    # - or, for a topic nothing was published to since (`_broker_lost`, every
    #   consumer_catch_up_after_ms): the topic gone, a partition gone, or a partition empty
    #   that was acked before.
    # The relay then creates the topics again and publishes its outbox again from the start;
    # readers dedupe by id.

    async def _broker_lost(self, outbox: Outbox) -> bool:
        """The topic is gone, has lost a partition, or a partition acked before is empty.
        (Only emptiness is read from the end offsets: Tansu reports the base offset of the last
        batch + 1, less than the high watermark; a partition written since the loss is caught
        by its acks.) With no ack recorded (a relay of an earlier release), every partition
        empty although the outbox was published."""
        async with self.sessionmaker() as session:
            acked = await relay.acked_offsets(session, outbox.topic)
            published = await relay.published_up_to(session, outbox.topic)
            start = await outbox.start(session)
        # A client of its own, started for the check: its metadata is the broker's now (a
        # long-lived client's `topics()` refreshes the list, not the partitions it caches).
        reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):  # a broker away is no sign of a loss
                await reader.start()
                partitions = reader.partitions_for_topic(outbox.topic)
                if not partitions:
                    return True
                if not acked.keys() <= partitions:
                    return True
                watched = acked.keys() or partitions
                ends = await reader.end_offsets([TopicPartition(outbox.topic, p) for p in watched])
        except (KafkaError, TimeoutError) as exc:
            logger.warning("cannot read the end offsets", extra={"error": repr(exc)})
            return False
        finally:
            await stop_client(reader)
        if acked:
            return not all(ends.values())
        return published > start and not any(ends.values())

    async def _ready_to_publish_again(self, topic: str) -> None:
        """The topics created again, and this one in the broker's metadata: the outbox is not
        published again into a topic the new broker does not list (Tansu acks messages sent
        to such a topic and serves them to no reader)."""
        self._starting_again.add(topic)
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):  # a broker away: the relay tries again
                await self.ensure_topics()
                listed = topic in await self._metadata.topics()
        except TimeoutError:
            raise KafkaTimeoutError(f"the broker did not list topic {topic} in time") from None
        if not listed:
            raise KafkaError(f"topic {topic} is not in the broker's metadata yet")
        self._starting_again.discard(topic)

    async def _publish_again(self, outbox: Outbox) -> None:
        await self._ready_to_publish_again(outbox.topic)
        async with self.sessionmaker() as session, session.begin():
            start = await outbox.start(session)
            position = await relay.claim(session, outbox.topic, start)
            if position is None:
                return  # another relay holds it; it will find the loss too
            await relay.start_again(session, outbox.topic, start)
        logger.warning(
            _LOST, extra={"topic": outbox.topic, "from": start, "was_at": position, "seen": "check"}
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
            max_poll_records=self.settings.batch_size(group),
            session_timeout_ms=self.settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=self.settings.kafka_heartbeat_interval_ms,
        )
        consumer.subscribe([self.topic], listener=_FinishBatchBeforeRevoke(in_flight, group))
        await consumer.start()
        floor_keeper = asyncio.create_task(
            self._keep_floor(processor, consumer), name=f"floor:{group}"
        )
        logger.info("consumer started", extra={"group": group, "bus": self.kind})
        try:
            while not self.stopping.is_set():
                records = await consumer.getmany(
                    timeout_ms=self.settings.consumer_batch_wait_ms,
                    max_records=self.settings.batch_size(group),
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
            await stop_client(consumer)
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

    async def _keep_floor(self, processor: BatchProcessor, consumer: AIOKafkaConsumer) -> None:
        """Move the group's floor up behind its markers (pruning them), never past the log's
        stable end, and when it stays stuck below what the relay has published while the group
        has read all the topic holds, apply the missing events from the log."""
        group = processor.group
        interval = self.settings.consumer_floor_interval_ms / 1000
        heal_after = self.settings.consumer_catch_up_after_ms / 1000
        end = event_log.LogEnd(f"{group} floor")
        last_floor, stuck_since = None, time.monotonic()
        while not self.stopping.is_set():
            await sleep_unless_stopped(self.stopping, interval)
            try:
                async with self.sessionmaker() as session, session.begin():
                    up_to = await end.advance(session)  # first: before the floor is locked
                    floor = await positions.advance_floor(session, group, up_to=up_to)
                    published = await relay.published_up_to(session, self.topic)
            except Exception as exc:
                logger.warning("cannot move the floor", extra={"group": group, "error": repr(exc)})
                continue
            if floor is None:  # another process of the group is at it
                continue
            # At the stable end, a transaction still running holds the floor (a long batch of
            # another group): nothing is known missing yet.
            if floor != last_floor or floor >= min(published, up_to):
                last_floor, stuck_since = floor, time.monotonic()
                continue
            if time.monotonic() - stuck_since >= heal_after:
                if await self._unread_on_topic(consumer):
                    # A slow group, not a topic that lost events: catching up would apply its
                    # backlog a second time beside the consumers (as it did in a full run).
                    stuck_since = time.monotonic()
                    continue
                logger.warning(
                    "events missing from the topic: catching up from the log",
                    extra={"group": group, "floor": floor, "published": published},
                )
                applied = await processor.catch_up(up_to=published)
                logger.info("caught up from the log", extra={"group": group, "events": applied})
                stuck_since = time.monotonic()

    async def _unread_on_topic(self, consumer: AIOKafkaConsumer) -> bool:
        """Whether the group has committed less than the end of some partition of the topic.
        (Tansu's end offsets can be below the true end: see `_broker_lost`; a group then looks
        done a little early, and catches up as it did before this check.) A broker that does
        not answer says nothing: the log is the source, the catch-up goes ahead."""
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                partitions = consumer.partitions_for_topic(self.topic) or set()
                ends = await consumer.end_offsets(
                    [TopicPartition(self.topic, p) for p in partitions]
                )
                for partition, end in ends.items():
                    if (await consumer.committed(partition) or 0) < end:
                        return True
        except (KafkaError, TimeoutError) as exc:
            logger.warning("cannot read the group's offsets", extra={"error": repr(exc)})
        return False

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


_LOST = "the broker lost what the relay had published: publishing the outbox again"


def _offsets_by_partition(acks: list[RecordMetadata]) -> dict[int, range]:
    """Partition -> the offsets acked in it (lowest to highest)."""
    offsets: dict[int, list[int]] = {}
    for ack in acks:
        offsets.setdefault(ack.partition, []).append(ack.offset)
    return {p: range(min(o), max(o) + 1) for p, o in offsets.items()}


async def stop_client(client: AIOKafkaConsumer) -> None:
    """Stop an aiokafka consumer. After a broker loss its `stop()` can raise the CancelledError
    of a task of its own that it cancelled and awaited (the group coordinator's): not a
    cancellation of the caller, and it would end the caller's task (a relay or a group's
    consumer) without a word. The caller's own cancellation still goes through."""
    try:
        await client.stop()
    except asyncio.CancelledError:
        if asyncio.current_task().cancelling():
            raise
        logger.warning("a Kafka client's stop was cut short by its own task's cancellation")


def _failure(ack: object) -> BaseException | None:
    return ack if isinstance(ack, BaseException) else None


def _topic_errors(response) -> list[tuple[str, int, str | None]]:
    return [(e[0], e[1], e[2] if len(e) > 2 else None) for e in response.topic_errors]
