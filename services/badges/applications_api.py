"""Applications, their review, and the creator view (GET /v1/creators/{creator_id})."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Body, Header, Query, Response

from services.badges import applications, streaks
from services.badges.eligibility import ApplicationForm, JoiningThresholds
from services.badges.models import Application
from services.badges.schemas import (
    ApplicationFormOut,
    ApplicationOut,
    ApplicationPage,
    ApplicationStatus,
    ApproveBody,
    BadgeOut,
    CreatorOut,
    RejectBody,
    RewardOut,
    StreakOut,
    ThresholdsOut,
)
from shared.errors import (
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
    ValidationFailed,
    error_responses,
)
from shared.events import MAX_COUNT
from shared.language import Language, preferred_language
from shared.web import Admin, ContextDep, EventsWriter, Reader, ReadSessionDep, SessionDep

router = APIRouter(tags=["badges"])

MAX_PAGE = 500
AcceptLanguage = Annotated[
    str | None,
    Header(description="messages in Chinese when it prefers `zh`, in English otherwise"),
]
_COMMON_ERRORS = (Unauthorized, Forbidden, ValidationFailed, RateLimited, Unavailable)


def _localised(response: Response, accept_language: str | None) -> Language:
    """The language of the messages; the answer says which, and that it depends on the header."""
    language = preferred_language(accept_language)
    response.headers["Content-Language"] = language
    response.headers["Vary"] = "Accept-Language"
    return language


def _out(application: Application, language: Language) -> ApplicationOut:
    return ApplicationOut(
        id=application.id,
        creator_id=application.creator_id,
        display_name=application.display_name,
        status=application.status,
        eligibility=applications.eligibility_of(application, language),
        form=ApplicationFormOut.model_validate(applications.form_of(application)),
        thresholds=ThresholdsOut.model_validate(application.thresholds),
        created_at=application.created_at,
        decided_at=application.decided_at,
        decided_by=application.decided_by,
        certified_at=application.certified_at,
        rejection_reason=application.rejection_reason,
    )


@router.post(
    "/v1/applications",
    status_code=201,
    response_model=ApplicationOut,
    responses=error_responses(*_COMMON_ERRORS, Conflict),
)
async def submit_application(
    form: ApplicationForm,
    _: EventsWriter,
    context: ContextDep,
    session: SessionDep,
    response: Response,
    accept_language: AcceptLanguage = None,
) -> ApplicationOut:
    """A creator's application, forwarded by the platform: judged at once. Eligible →
    `pending_review`, else `ineligible`, with the basis and the reasons either way. 409 when
    the creator has an application pending review or is already certified."""
    language = _localised(response, accept_language)
    thresholds = JoiningThresholds.from_settings(context.settings)
    application = await applications.submit(session, form, thresholds)
    response.headers["Location"] = f"/v1/applications/{application.id}"
    return _out(application, language)


@router.get(
    "/v1/applications/{application_id}",
    response_model=ApplicationOut,
    responses=error_responses(*_COMMON_ERRORS, NotFound),
)
async def get_application(
    application_id: str,
    _: Reader,
    session: ReadSessionDep,
    response: Response,
    accept_language: AcceptLanguage = None,
) -> ApplicationOut:
    """One application, with its messages in the reader's language."""
    language = _localised(response, accept_language)
    return _out(await applications.get(session, application_id), language)


@router.get(
    "/v1/admin/applications",
    response_model=ApplicationPage,
    responses=error_responses(*_COMMON_ERRORS),
)
async def list_applications(
    _: Admin,
    session: SessionDep,
    response: Response,
    status: ApplicationStatus | None = None,
    creator_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_COUNT)] = 0,
    accept_language: AcceptLanguage = None,
) -> ApplicationPage:
    """Applications in the order they arrived (then by id), e.g. `?status=pending_review` for
    the review queue."""
    language = _localised(response, accept_language)
    rows, total = await applications.list_applications(
        session, status=status, creator_id=creator_id, limit=limit, offset=offset
    )
    return ApplicationPage(
        items=[_out(row, language) for row in rows], limit=limit, offset=offset, total=total
    )


@router.post(
    "/v1/admin/applications/{application_id}/approve",
    response_model=ApplicationOut,
    responses=error_responses(*_COMMON_ERRORS, NotFound, Conflict),
)
async def approve_application(
    application_id: str,
    key: Admin,
    context: ContextDep,
    session: SessionDep,
    response: Response,
    body: Annotated[ApproveBody | None, Body()] = None,
    accept_language: AcceptLanguage = None,
) -> ApplicationOut:
    """Certify the creator (`certified_at` defaults to now, never in the future). The
    certification badge follows through the bus. 409 unless the application is pending review."""
    language = _localised(response, accept_language)
    now = datetime.now(UTC)
    certified_at = (body.certified_at if body else None) or now
    _check_certified_at(certified_at, now, context.settings.event_time_min)
    application = await applications.approve(
        session, application_id, certified_at=certified_at, decided_by=key.name, now=now
    )
    return _out(application, language)


def _check_certified_at(certified_at: datetime, now: datetime, earliest: datetime) -> None:
    """Not in the future (server's clock), and not before the earliest time an event may
    carry (the certification travels as an event)."""
    if certified_at > now:
        msg = "must not be in the future"
    elif certified_at < earliest:
        msg = f"must not be before {earliest.isoformat()}"
    else:
        return
    raise ValidationFailed(
        f"certified_at {msg}", details=[{"loc": ["body", "certified_at"], "msg": msg}]
    )


@router.post(
    "/v1/admin/applications/{application_id}/reject",
    response_model=ApplicationOut,
    responses=error_responses(*_COMMON_ERRORS, NotFound, Conflict),
)
async def reject_application(
    application_id: str,
    body: RejectBody,
    key: Admin,
    session: SessionDep,
    response: Response,
    accept_language: AcceptLanguage = None,
) -> ApplicationOut:
    """Turn the application down, with a reason. The creator may apply again."""
    language = _localised(response, accept_language)
    application = await applications.reject(
        session, application_id, reason=body.reason, decided_by=key.name, now=datetime.now(UTC)
    )
    return _out(application, language)


@router.get(
    "/v1/creators/{creator_id}",
    response_model=CreatorOut,
    responses=error_responses(*_COMMON_ERRORS, NotFound),
)
async def get_creator(creator_id: str, _: Reader, session: ReadSessionDep) -> CreatorOut:
    """The creator in the program: status (from the latest application: `certified`,
    `pending_review`, `ineligible`, `rejected`), badges, streak, rewards. 404 for a creator who
    never applied (a creator with posts but no application has month views, not this one).
    `streak`: the run of consecutive settled active months ending at the creator's latest
    settled month (0 when that month was missed) and the latest settled active month."""
    record = await applications.creator_record(session, creator_id)
    streak = await streaks.streak_of(session, creator_id)
    return CreatorOut(
        creator_id=creator_id,
        display_name=record.application.display_name,
        status=record.status,
        certified_at=record.application.certified_at,
        badges=[BadgeOut.model_validate(badge) for badge in record.badges],
        streak=StreakOut(
            consecutive_active_months=streak.consecutive_active_months,
            last_active_month=streak.last_active_month,
        ),
        rewards=[RewardOut.model_validate(reward) for reward in record.rewards],
    )
