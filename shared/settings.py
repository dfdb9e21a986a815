"""One settings object for every service. Every program number of PROGRAM.md lives here."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, PositiveInt, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EVENTS_TOPIC = "creator-activity.events"
REWARDS_TOPIC = "creator-activity.rewards"
MIN_BOOTSTRAP_KEY_CHARS = 32
# Room kept between max_event_bytes and kafka_max_request_bytes for what the bus message and
# the Kafka record batch add around one event.
BUS_MESSAGE_OVERHEAD_BYTES = 16 * 1024
# The types of the monthly program's numbers that versions may change (shared/program_settings.py):
# an environment value and an operator's change are validated alike. A weight's upper bound keeps
# a score (Σ weight × component ≤ Σ weights) within its column, Numeric(9, 6).
Weight = Annotated[Decimal, Field(ge=0, le=100, decimal_places=6)]
Amount = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=2)]  # USDT, in cents
PostCount = Annotated[int, Field(ge=0)]


class Settings(BaseSettings):
    # hide_input_in_errors: a refused value (a key, a URL with a password) never reaches a log.
    model_config = SettingsConfigDict(
        env_prefix="CREATOR_ACTIVITY_", extra="ignore", hide_input_in_errors=True
    )

    # --- process and infrastructure -------------------------------------------------------
    database_url: str | None = Field(
        default=None, description="PostgreSQL URL; unset = embedded PostgreSQL under data_dir"
    )
    data_dir: Path = Path("./.data")
    kafka_bootstrap: str | None = Field(
        default=None, description="Kafka bootstrap servers; unset = the embedded event log"
    )
    kafka_events_topic: str = EVENTS_TOPIC
    kafka_rewards_topic: str = REWARDS_TOPIC
    kafka_group_prefix: str = Field(
        default="", description="prefix of the Kafka consumer group ids (scoring, badges)"
    )
    kafka_partitions: int = Field(default=6, ge=1)
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_enable_idempotence: bool = Field(
        default=False, description="idempotent producer; brokers without InitProducerId need off"
    )
    kafka_max_request_bytes: int = Field(
        default=1024 * 1024,
        ge=64 * 1024,
        description="the producer's max_request_size; one event must fit with room to spare",
    )
    bootstrap_admin_key: str | None = Field(
        default=None,
        description="makes sure a key with every scope exists at start-up; 32 characters or more",
    )
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="auto: text when stderr is a terminal, JSON lines otherwise"
    )
    db_pool_size: int = Field(default=10, ge=1)
    db_pool_timeout_s: float = Field(
        default=5, gt=0, description="wait for a pooled connection, at most; then 503"
    )
    db_connect_timeout_s: float = Field(default=5, gt=0, description="open a connection, at most")
    db_pool_pre_ping: bool = Field(
        default=False,
        description="test each pooled connection before use (three round trips with asyncpg); "
        "off: a connection the server dropped fails one request with 503 and the pool is "
        "renewed at once",
    )
    db_statement_timeout_ms: int = Field(
        default=30_000, ge=0, description="PostgreSQL statement_timeout of every connection"
    )
    db_lock_timeout_ms: int = Field(
        default=10_000, ge=0, description="PostgreSQL lock_timeout of every connection"
    )
    db_idle_in_transaction_timeout_ms: int = Field(
        default=60_000,
        ge=0,
        description="PostgreSQL idle_in_transaction_session_timeout of every connection",
    )
    unavailable_retry_after_s: int = Field(
        default=5, ge=1, description="Retry-After of a 503 (database or bus unavailable)"
    )
    readyz_timeout_s: float = Field(default=5, gt=0, description="each /readyz check, at most")
    lag_cache_seconds: float = Field(
        default=5, ge=0, description="how long /metrics reuses the consumer lag it computed"
    )
    gc_young_threshold: int = Field(
        default=20_000,
        ge=700,
        description="net allocations of container objects between two young collections of "
        "Python's garbage collector (CPython's default: 700); the start-up heap is frozen out "
        "of collections (services/garbage_collector.py)",
    )

    # --- the processes of one command (services/supervisor.py, docs/benchmarks.md) ----------
    serve_web_processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="HTTP processes sharing the port, each serving every API of the command",
    )
    serve_workers_apart: bool = Field(
        default=False,
        description="run each consumer group (and the relays) in a process of its own, so the "
        "command uses several cores; one command either way",
    )
    serve_group_processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="with serve_workers_apart, processes per consumer group: on Kafka they share "
        "the partitions; on the embedded bus one applies at a time (the others stand by)",
    )
    serve_workers_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="with serve_workers_apart, how much lower the consumer processes' CPU "
        "priority is than the HTTP processes' (Unix nice): when the cores are short, clients "
        "posting events are answered first and the consumers' lag grows; idle cores still go to "
        "the consumers",
    )

    # --- ingest -----------------------------------------------------------------------------
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1)
    max_request_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="the body of any request but POST /v1/events (forms, admin actions)",
    )
    max_batch_events: int = Field(default=1000, ge=1)
    max_event_bytes: int = Field(
        default=512 * 1024,
        ge=1024,
        description="one event at most, as compact JSON; below kafka_max_request_bytes",
    )
    event_time_min: datetime = Field(
        default=datetime(2000, 1, 1, tzinfo=UTC),
        description="the earliest event `time` accepted (a date or time; naive = UTC)",
    )
    event_time_max_ahead_hours: float = Field(
        default=24, ge=0, description="how far after the server's clock an event `time` may be"
    )

    # --- consumers --------------------------------------------------------------------------
    consumer_batch_size: int = Field(default=500, ge=1, description="events per batch, at most")
    consumer_batch_sizes: dict[str, PositiveInt] = Field(
        default={"scoring": 2000},
        description='events per batch, at most, of these groups (JSON, e.g. {"scoring": 2000},'
        " the default): a scoring batch has costs that do not grow with it (a statement per"
        " table, the standings versions, the commit), so larger batches catch up faster; a group"
        " that keeps up takes what arrived within consumer_batch_wait_ms anyway"
        " (docs/operations.md)",
    )
    consumer_batch_wait_ms: int = Field(default=200, ge=1, description="wait for a batch, at most")
    consumer_poll_interval_ms: int = Field(default=100, ge=1, description="embedded log polling")
    consumer_retry_initial_ms: int = Field(default=100, ge=1)
    consumer_retry_max_ms: int = Field(default=10_000, ge=1)
    consumer_poison_attempts: int = Field(
        default=3, ge=1, description="tries of one failing event before it is dead-lettered"
    )
    relay_batch_size: int = Field(default=1000, ge=1)
    consumer_halt_after_failures: int = Field(
        default=3,
        ge=1,
        description="events failing one after another, with no success between, that halt a "
        "group instead of being parked",
    )
    consumer_halt_retry_ms: int = Field(
        default=5_000, ge=1, description="how long a halted group waits before trying again"
    )
    consumer_floor_interval_ms: int = Field(
        default=1_000, ge=1, description="Kafka: how often a group moves its floor up"
    )
    consumer_catch_up_after_ms: int = Field(
        default=30_000,
        ge=1,
        description="Kafka: a floor stuck below the relayed events this long = events missing "
        "from the topic; the group applies them from the log",
    )
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1)
    kafka_heartbeat_interval_ms: int = Field(default=3_000, ge=1)
    kafka_publish_timeout_ms: int = Field(
        default=15_000,
        ge=1,
        description="a relay's batch not acked in this time is published again, by a new producer",
    )
    kafka_retention_ms: int = Field(
        default=7 * 24 * 3600 * 1000,
        ge=-1,
        description="retention of the topics this service creates (-1 = forever); a group "
        "down for longer catches up from the PostgreSQL log",
    )

    # --- program (PROGRAM.md) ---------------------------------------------------------------
    program_timezone: str = "Asia/Shanghai"
    # who may join
    min_followers_single_platform: int = 1000
    square_min_followers: int = 500
    square_min_interactions_30d: int = 100
    # reward 1: new-creator pool
    new_creator_pool: Decimal = Decimal("5000.00")
    voucher_amount: Decimal = Decimal("50.00")
    qualifying_post_min_chars: int = 50
    # reward 2: monthly pool
    monthly_pool: Amount = Decimal("1500.00")
    monthly_min_quality_posts: PostCount = 30
    weight_posts: Weight = Decimal("0.25")
    weight_active_days: Weight = Decimal("0.25")
    weight_interactions: Weight = Decimal("0.30")
    weight_quality: Weight = Decimal("0.20")
    # reward 3: streaks
    streak_gift_every_months: int = 3
    # reward 5: exposure
    featured_posts_per_week: int = 10
    featured_max_per_creator: int = 2
    featured_post_bonus: Amount = Decimal("10.00")
    recommendations_size: int = 20
    recommendations_max: int = Field(default=100, ge=1, description="largest `limit` of a list")
    recommendation_weight_score: Decimal = Decimal("0.50")
    recommendation_weight_activity: Decimal = Decimal("0.30")
    recommendation_weight_growth: Decimal = Decimal("0.20")
    recommendation_window_days: int = Field(
        default=30, ge=1, description="days of activity and follower growth a list looks at"
    )
    recommendation_followers_damping: int = Field(
        default=100, ge=1, description="k of growth = ln((now + k) / (then + k))"
    )
    recommendation_growth_full: float = Field(
        default=2.0, gt=1, description="followers ratio (damped) that earns the full growth part"
    )
    recommendation_newcomer_days: int = Field(
        default=60, ge=1, description="certified this recently = a newcomer"
    )
    recommendation_newcomer_every: int = Field(
        default=5, ge=1, description="at least one newcomer in every this many slots"
    )
    # precomputed standings and recommendations (services/scoring/standings.py)
    standings_refresh_seconds: float = Field(
        default=2.0, ge=0, description="a read serves a table this young even if it is stale"
    )
    recommendations_max_age_seconds: float = Field(
        default=300.0, gt=0, description="recommendations are recomputed at least this often"
    )
    # definitions
    near_duplicate_threshold: float = Field(
        default=0.7, gt=0, le=1, description="estimated Jaccard similarity of a near-duplicate"
    )
    near_duplicate_min_chars: int = Field(
        default=50, ge=1, description="shorter texts (image captions) are not compared"
    )
    near_duplicate_shingle_size: int = Field(
        default=2,
        ge=1,
        le=10,
        description="characters per shingle of near-duplicate detection in Chinese (and other "
        "ideographic or syllabic scripts)",
    )
    near_duplicate_alphabetic_shingle_size: int = Field(
        default=4,
        ge=1,
        le=10,
        description="characters per shingle of near-duplicate detection in runs of other letters "
        "and digits (English)",
    )
    near_duplicate_permutations: int = Field(
        default=128, ge=16, le=1024, description="MinHash permutations of a post's signature"
    )
    near_duplicate_recall_weight: float = Field(
        default=0.9,
        gt=0,
        lt=1,
        description="weight of missed candidates against extra ones when the LSH bands are chosen",
    )
    interaction_weight_like: int = 1
    interaction_weight_comment: int = 2
    interaction_weight_share: int = 3
    interaction_weight_quote: int = 3
    interaction_daily_cap_per_actor: int = Field(
        default=10, description="weighted interactions one actor may give one creator per day"
    )
    # content quality when moderation sent no score (services/scoring/score.py, docs/rules.md)
    quality_length_weight: Decimal = Decimal("0.40")
    quality_length_full_at: int = Field(default=500, ge=1)
    quality_images_weight: Decimal = Decimal("0.20")
    quality_images_full_at: int = Field(default=3, ge=1)
    quality_structure_weight: Decimal = Decimal("0.15")
    quality_structure_full_at: int = Field(default=5, ge=1)
    quality_engagement_weight: Decimal = Decimal("0.25")
    quality_engagement_full_at: int = Field(default=20, ge=1)
    settlement_grace_hours: int = 48
    settlement_event_creators: int = Field(
        default=1000, ge=1, description="creators per month.settled event (its parts)"
    )

    @field_validator("event_time_min", mode="before")
    @classmethod
    def _event_time_min_is_an_instant(cls, value: object) -> object:
        if isinstance(value, date) and not isinstance(value, datetime):
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        return value

    @field_validator("event_time_min")
    @classmethod
    def _naive_event_time_min_is_utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    @model_validator(mode="after")
    def _some_weight_counts(self) -> Settings:
        check_weights(
            self.weight_posts,
            self.weight_active_days,
            self.weight_interactions,
            self.weight_quality,
        )
        return self

    @model_validator(mode="after")
    def _one_event_fits_a_kafka_request(self) -> Settings:
        # The bus message adds the log position and repeats creator_id; the record batch adds
        # its headers: keep that much room under the producer's limit.
        room = BUS_MESSAGE_OVERHEAD_BYTES
        if self.max_event_bytes + room > self.kafka_max_request_bytes:
            raise ValueError(
                f"max_event_bytes ({self.max_event_bytes}) must stay at least {room} bytes below "
                f"kafka_max_request_bytes ({self.kafka_max_request_bytes})"
            )
        return self

    @field_validator("consumer_batch_sizes")
    @classmethod
    def _known_groups(cls, sizes: dict[str, int]) -> dict[str, int]:
        if unknown := sorted(set(sizes) - set(CONSUMER_GROUPS)):
            raise ValueError(
                f"unknown consumer group {', '.join(map(repr, unknown))}"
                f" (the groups: {', '.join(CONSUMER_GROUPS)})"
            )
        return sizes

    @field_validator("bootstrap_admin_key")
    @classmethod
    def _long_enough(cls, key: str | None) -> str | None:
        if not key:  # set but empty (`KEY=` in an env file): no bootstrap key
            return None
        if len(key) < MIN_BOOTSTRAP_KEY_CHARS:
            raise ValueError(
                f"CREATOR_ACTIVITY_BOOTSTRAP_ADMIN_KEY must be at least {MIN_BOOTSTRAP_KEY_CHARS}"
                f" characters long (it has {len(key)}); generate one with"
                " `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return key

    @cached_property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.program_timezone)

    @property
    def voucher_cap(self) -> int:
        return int(self.new_creator_pool / self.voucher_amount)

    def batch_size(self, group: str) -> int:
        """Events per batch of consumer group `group`, at most."""
        return self.consumer_batch_sizes.get(group, self.consumer_batch_size)


# The consumer groups of the services (services/runtime.py CONSUMERS, which a test keeps equal):
# a batch size for a group that does not exist is a typo, refused rather than ignored.
CONSUMER_GROUPS = ("scoring", "badges")


def check_weights(*weights: Decimal) -> None:
    """The score's weights: all zero would make every score 0 (the pool split equally)."""
    if sum(weights) <= 0:
        raise ValueError("the score's weights must not all be 0")
