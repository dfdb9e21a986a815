"""One settings object for every service. Every program number of PROGRAM.md lives here."""

from __future__ import annotations

from decimal import Decimal
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

EVENTS_TOPIC = "creator-activity.events"
REWARDS_TOPIC = "creator-activity.rewards"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CREATOR_ACTIVITY_", extra="ignore")

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
    bootstrap_admin_key: str | None = Field(
        default=None, description="makes sure a key with every scope exists at start-up"
    )
    log_level: str = "INFO"
    db_pool_size: int = Field(default=10, ge=1)

    # --- ingest -----------------------------------------------------------------------------
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1)
    max_batch_events: int = Field(default=1000, ge=1)

    # --- consumers --------------------------------------------------------------------------
    consumer_batch_size: int = Field(default=500, ge=1, description="events per batch, at most")
    consumer_batch_wait_ms: int = Field(default=200, ge=1, description="wait for a batch, at most")
    consumer_poll_interval_ms: int = Field(default=100, ge=1, description="embedded log polling")
    consumer_retry_initial_ms: int = Field(default=100, ge=1)
    consumer_retry_max_ms: int = Field(default=10_000, ge=1)
    consumer_poison_attempts: int = Field(
        default=3, ge=1, description="tries of one failing event before it is dead-lettered"
    )
    relay_batch_size: int = Field(default=1000, ge=1)

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
    monthly_pool: Decimal = Decimal("1500.00")
    monthly_min_quality_posts: int = 30
    weight_posts: Decimal = Decimal("0.25")
    weight_active_days: Decimal = Decimal("0.25")
    weight_interactions: Decimal = Decimal("0.30")
    weight_quality: Decimal = Decimal("0.20")
    # reward 3: streaks
    streak_gift_every_months: int = 3
    # reward 5: exposure
    featured_posts_per_week: int = 10
    featured_max_per_creator: int = 2
    featured_post_bonus: Decimal = Decimal("10.00")
    recommendations_size: int = 20
    # definitions
    near_duplicate_threshold: float = Field(default=0.8, ge=0, le=1)
    interaction_weight_like: int = 1
    interaction_weight_comment: int = 2
    interaction_weight_share: int = 3
    interaction_weight_quote: int = 3
    interaction_daily_cap_per_actor: int = Field(
        default=10, description="weighted interactions one actor may give one creator per day"
    )
    settlement_grace_hours: int = 48

    @cached_property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.program_timezone)

    @property
    def voucher_cap(self) -> int:
        return int(self.new_creator_pool / self.voucher_amount)
