"""The badges service's HTTP shapes: applications, the creator view, rewards.

Money is a decimal string with two places ("50.00"), never a float; times are RFC 3339 with
an offset.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)

from services.badges.eligibility import Eligibility
from shared.events import NOT_BLANK, RFC3339Time, storable
from shared.money import Money

ApplicationStatus = Literal["pending_review", "ineligible", "approved", "rejected"]
CreatorStatus = Literal["certified", "pending_review", "ineligible", "rejected"]


# --- rewards ----------------------------------------------------------------------------------


class RewardOut(BaseModel):
    """One reward as every read shows it (`GET /v1/creators/{id}`, `/v1/rewards`, the feed).

    `RewardOut.model_validate(row)` takes a `badges_rewards` row."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    creator_id: str
    kind: str
    amount: Money | None = Field(description='a decimal string, "50.00"; null for goods')
    currency: str | None
    month: str | None = Field(description="YYYY-MM, for rewards of a program month")
    status: str
    issued_at: datetime


# --- applications -----------------------------------------------------------------------------


class ApproveBody(BaseModel):
    """`POST /v1/admin/applications/{id}/approve`; the body may be left out."""

    model_config = ConfigDict(extra="forbid")

    certified_at: RFC3339Time | None = Field(
        default=None,
        description="when the creator counts as certified (RFC 3339 with an offset); "
        "default now, never in the future",
    )


class RejectBody(BaseModel):
    """`POST /v1/admin/applications/{id}/reject`."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=500, pattern=NOT_BLANK),
        AfterValidator(storable),
    ] = Field(description="why, in words the creator can be shown (1–500 characters)")


class PlatformOut(BaseModel):
    platform: str
    handle: str
    followers: int
    verified: bool


class ApplicationFormOut(BaseModel):
    """What the platform sent about the creator, as sent."""

    platforms: list[PlatformOut]
    square_certified: bool
    square_followers: int | None
    square_interactions_30d: int | None


class ThresholdsOut(BaseModel):
    """The thresholds the application was judged by (the settings of the day)."""

    min_followers_single_platform: int
    square_min_followers: int
    square_min_interactions_30d: int


class ApplicationOut(BaseModel):
    id: str
    creator_id: str
    display_name: str | None
    status: ApplicationStatus
    eligibility: Eligibility = Field(
        description="checked when the application arrived; messages in the reader's language"
    )
    form: ApplicationFormOut
    thresholds: ThresholdsOut
    created_at: datetime
    decided_at: datetime | None
    decided_by: str | None = Field(description="the name of the operator's API key")
    certified_at: datetime | None
    rejection_reason: str | None


class ApplicationPage(BaseModel):
    items: list[ApplicationOut]
    limit: int
    offset: int
    total: int


# --- the creator view -------------------------------------------------------------------------


class BadgeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    kind: str
    awarded_at: datetime


class StreakOut(BaseModel):
    consecutive_active_months: int = 0
    last_active_month: str | None = None


class CreatorOut(BaseModel):
    creator_id: str
    display_name: str | None
    status: CreatorStatus = Field(description="from the creator's latest application")
    certified_at: datetime | None
    badges: list[BadgeOut]
    streak: StreakOut
    rewards: list[RewardOut] = Field(description="in the order issued")
