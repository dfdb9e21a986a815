"""The monthly program's settings, versioned: every version, and a change from a future month."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    model_validator,
)

from shared import program_settings
from shared.errors import Conflict, Forbidden, Unauthorized, ValidationFailed, error_responses
from shared.events import NOT_BLANK, storable
from shared.program_time import MONTH, current_month
from shared.web import Admin, ContextDep, SessionDep

router = APIRouter(tags=["operations"])

# Decimals are strings in the API ("0.25", "1500.00"); the patterns are exactly what is accepted.
WeightText = Annotated[str, Field(pattern=program_settings.WEIGHT_TEXT, examples=["0.30"])]
AmountText = Annotated[str, Field(pattern=program_settings.AMOUNT_TEXT, examples=["1500.00"])]
MinPosts = Annotated[StrictInt, Field(ge=0, examples=[30])]


class ChangedSettings(BaseModel):
    """The settings a version changes: at least one."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    weight_posts: WeightText = None
    weight_active_days: WeightText = None
    weight_interactions: WeightText = None
    weight_quality: WeightText = None
    min_posts: MinPosts = None
    monthly_pool: AmountText = None
    featured_post_bonus: AmountText = None

    @model_validator(mode="after")
    def _changes_something(self) -> ChangedSettings:
        if not self.model_fields_set:
            raise ValueError("no setting to change")
        return self


class ProgramSettings(BaseModel):
    """Every versioned value."""

    weight_posts: str
    weight_active_days: str
    weight_interactions: str
    weight_quality: str
    min_posts: int
    monthly_pool: str
    featured_post_bonus: str


class SettingsChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    effective_from: str = Field(pattern=MONTH.pattern, examples=["2027-01"])
    settings: ChangedSettings
    reason: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=2000, pattern=NOT_BLANK),
        AfterValidator(storable),
    ] = Field(description="why, for whoever reads the history (1–2,000 characters)")


class ChangedSettingsOut(BaseModel):
    weight_posts: str | None = None
    weight_active_days: str | None = None
    weight_interactions: str | None = None
    weight_quality: str | None = None
    min_posts: int | None = None
    monthly_pool: str | None = None
    featured_post_bonus: str | None = None


class SettingsVersion(BaseModel):
    effective_from: str  # YYYY-MM; "1900-01" (the earliest month) for the environment's
    settings: ProgramSettings  # every versioned value in force from this version on
    changes: ChangedSettingsOut  # what this version changed (only those keys)
    changed_by: str  # the admin key's name, or "environment"
    reason: str
    changed_at: datetime


class SettingsVersions(BaseModel):
    items: list[SettingsVersion]  # in the order they apply
    current_month: str  # the running program month
    in_force: ProgramSettings  # the values that govern it


@router.get(
    "/v1/admin/program-settings",
    response_model=SettingsVersions,
    response_model_exclude_unset=True,
    responses=error_responses(Unauthorized, Forbidden),
)
async def list_versions(_: Admin, session: SessionDep, context: ContextDep) -> dict:
    """Every version of the monthly program's settings, in the order they apply (by the month
    they take effect from, then the order they were made), and the values in force now."""
    versions = await program_settings.versions(session)
    month = current_month(context.settings.timezone)
    in_force = program_settings.values_in_force(context.settings, versions, month)
    return {
        "items": program_settings.described(context.settings, versions),
        "current_month": month,
        "in_force": program_settings.to_json(in_force),
    }


@router.post(
    "/v1/admin/program-settings",
    status_code=201,
    response_model=SettingsVersion,
    response_model_exclude_unset=True,
    responses=error_responses(Unauthorized, Forbidden, Conflict, ValidationFailed),
)
async def change_settings(
    change: SettingsChange, key: Admin, session: SessionDep, context: ContextDep
) -> dict:
    """Change settings from a month after the current program month, with a reason; recorded
    with the admin key's name. 409 `not_a_future_month` for the current month or an earlier
    one; 409 `weights_all_zero` when, with the other versions, no weight would be left in a
    month it governs; 422 for an unknown setting or a bad value."""
    version = await program_settings.add_version(
        session,
        context.settings,
        effective_from=change.effective_from,
        changes=change.settings.model_dump(exclude_unset=True),
        changed_by=key.name,
        reason=change.reason,
    )
    every = await program_settings.versions(session)
    shown = program_settings.described(context.settings, every)
    return next(v for v, row in zip(shown, every, strict=True) if row is version)
