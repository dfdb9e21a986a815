"""The operator console: `/ops`, HTML pages served by the service itself.

Server-rendered (Jinja2), no script at all: plain links and forms, each state-changing form
posted with the session's CSRF token and answered with a redirect (post/redirect/get), so a
reload never repeats an action. Sign-in takes an admin API key (services/console/sessions.py).
Pages are not part of the API: they are left out of the OpenAPI document.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from services.console import forms, pages, sessions
from services.console.sessions import Operator
from shared.errors import AppError
from shared.language import preferred_language
from shared.program_time import MONTH, current_month
from shared.web import Context, ContextDep, transaction

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")


def figure(value: Any, places: int = 4) -> str:
    """A number for reading: at most `places` decimals, no trailing zeros."""
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    text = f"{round(number, places):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


templates.env.filters["figure"] = figure
CSS = (HERE / "static" / "ops.css").read_bytes()

SESSION_COOKIE = "ops_session"
SIGN_IN_COOKIE = "ops_sign_in"  # the sign-in form's CSRF token, before any session exists
COOKIE_PATH = "/ops"
SECURITY_HEADERS = {
    # No script, no frame, nothing from elsewhere: the pages are plain HTML, CSS and inline SVG.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
NOTICES = {
    "approved": "Approved: {creator} is certified. The certification badge follows through the "
    "bus within a batch.",
    "rejected": "Rejected the application of {creator}.",
    "settled": "Settled {month}: the ranking and the payouts are frozen; the pool shares follow "
    "through the bus.",
    "replayed": "Replayed {group}: {applied} applied, {failed} failed again, {not_replayable} "
    "without a log position.",
    "signed_out": "Signed out.",
    "session_ended": "Your session ended (expired, signed out, or its key was revoked): sign in "
    "again.",
}

router = APIRouter(prefix="/ops", include_in_schema=False)
MonthParam = Annotated[str, PathParam(pattern=MONTH.pattern)]


# --- rendering ------------------------------------------------------------------------------


def render(
    request: Request,
    template: str,
    operator: Operator | None,
    status_code: int = 200,
    **values: Any,
) -> Response:
    notice = NOTICES.get(request.query_params.get("notice", ""))
    if notice:
        notice = notice.format_map(_Blank(request.query_params))
    response = templates.TemplateResponse(
        request,
        template,
        {"operator": operator, "notice": notice, **values},
        status_code=status_code,
    )
    response.headers.update(SECURITY_HEADERS)
    return response


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def redirect(path: str, **query: Any) -> RedirectResponse:
    target = f"{path}?{urlencode(query)}" if query else path
    response = RedirectResponse(target, status_code=303)
    response.headers.update(SECURITY_HEADERS)
    return response


def _set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        secure=True,
        httponly=True,
        samesite="strict",
    )


# --- who is signed in -----------------------------------------------------------------------


async def current_operator(request: Request, context: ContextDep) -> Operator:
    """The signed-in operator; otherwise a redirect to the sign-in page (which says the session
    ended when there was one)."""
    token = request.cookies.get(SESSION_COOKIE)
    async with transaction(context) as session:
        operator = await sessions.signed_in(session, token, datetime.now(UTC))
    if operator is None:
        query = {"notice": "session_ended"} if token else {}
        target = f"{COOKIE_PATH}/sign-in" + (f"?{urlencode(query)}" if query else "")
        headers = {"Location": target, **SECURITY_HEADERS}
        if token:
            headers["Set-Cookie"] = (
                f"{SESSION_COOKIE}=; Max-Age=0; Path={COOKIE_PATH}; Secure; HttpOnly; "
                "SameSite=strict"
            )
        raise HTTPException(status_code=303, detail="sign in first", headers=headers)
    return operator


OperatorDep = Annotated[Operator, Depends(current_operator)]


async def checked_form(request: Request, operator: Operator) -> dict[str, str] | None:
    """The posted form when it carries the session's CSRF token, else None."""
    form = await forms.read_form(request)
    if not sessions.same_token(form.get("csrf_token"), operator.csrf_token):
        return None
    return form


def csrf_refused(request: Request, operator: Operator | None) -> Response:
    return render(
        request,
        "error.html",
        operator,
        status_code=403,
        title="Refused",
        message="This form was refused: it did not carry this session's form token (CSRF "
        "check). Reload the page and try again.",
    )


def _language(request: Request):
    return preferred_language(request.headers.get("accept-language"))


# --- static ---------------------------------------------------------------------------------


@router.get("/static/ops.css")
async def stylesheet() -> Response:
    return Response(CSS, media_type="text/css", headers={"Cache-Control": "max-age=3600"})


# --- signing in and out ---------------------------------------------------------------------


@router.get("")
async def home(operator: OperatorDep) -> Response:
    return redirect(f"{COOKIE_PATH}/applications")


@router.get("/sign-in")
async def sign_in_page(request: Request) -> Response:
    return _sign_in_form(request)


def _sign_in_form(request: Request, error: str | None = None, status_code: int = 200) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "sign_in.html",
        None,
        status_code=status_code,
        error=error,
        sign_in_token=token,
    )
    _set_cookie(response, SIGN_IN_COOKIE, token, max_age=3600)
    return response


@router.post("/sign-in")
async def sign_in(request: Request, context: ContextDep) -> Response:
    form = await forms.read_form(request)
    if not sessions.same_token(form.get("csrf_token"), request.cookies.get(SIGN_IN_COOKIE, "")):
        return _sign_in_form(
            request,
            "The sign-in form expired or did not come from this page: try again.",
            403,
        )
    api_key = form.get("api_key", "").strip()
    if not api_key:
        return _sign_in_form(request, "Enter an admin API key.", 401)
    try:
        async with transaction(context) as session:
            token, _ = await sessions.sign_in(session, api_key, datetime.now(UTC))
    except AppError as exc:
        if exc.status_code == 403:
            message = "This key is valid but has no admin scope: the console needs an admin key."
        else:
            message = "Unknown or revoked API key: sign in with an admin key."
        return _sign_in_form(request, message, exc.status_code)
    response = redirect(f"{COOKIE_PATH}/applications")
    _set_cookie(response, SESSION_COOKIE, token, int(sessions.SESSION_LIFETIME.total_seconds()))
    response.delete_cookie(SIGN_IN_COOKIE, path=COOKIE_PATH, secure=True, httponly=True)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, context: ContextDep, operator: OperatorDep) -> Response:
    if await checked_form(request, operator) is None:
        return csrf_refused(request, operator)
    async with transaction(context) as session:
        await sessions.sign_out(session, request.cookies.get(SESSION_COOKIE, ""))
    response = redirect(f"{COOKIE_PATH}/sign-in", notice="signed_out")
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, secure=True, httponly=True)
    return response


# --- applications ---------------------------------------------------------------------------

STATUS_FILTERS = ("pending_review", "ineligible", "approved", "rejected")


@router.get("/applications")
async def applications_page(
    request: Request,
    context: ContextDep,
    operator: OperatorDep,
    status: str = "pending_review",
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> Response:
    return await _applications(request, context, operator, status, offset)


async def _applications(
    request: Request,
    context: Context,
    operator: Operator,
    status: str,
    offset: int = 0,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    shown = status if status in STATUS_FILTERS else None
    async with transaction(context) as session:
        page = await pages.review_queue(session, operator.key, shown, offset, _language(request))
    return render(
        request,
        "applications.html",
        operator,
        status_code=status_code,
        page=page,
        status=shown or "all",
        statuses=STATUS_FILTERS,
        error=error,
        timezone=context.settings.program_timezone,
    )


@router.post("/applications/{application_id}/approve")
async def approve(
    application_id: str, request: Request, context: ContextDep, operator: OperatorDep
) -> Response:
    form = await checked_form(request, operator)
    if form is None:
        return csrf_refused(request, operator)
    try:
        certified_at = forms.local_time(form.get("certified_at", ""), context.settings.timezone)
        async with transaction(context) as session:
            await pages.approve(session, context, operator.key, application_id, certified_at)
    except (AppError, forms.FormError, ValidationError) as exc:
        return await _decision_failed(request, context, operator, exc)
    return redirect(
        f"{COOKIE_PATH}/applications",
        notice="approved",
        creator=form.get("creator_id", application_id),
    )


@router.post("/applications/{application_id}/reject")
async def reject(
    application_id: str, request: Request, context: ContextDep, operator: OperatorDep
) -> Response:
    form = await checked_form(request, operator)
    if form is None:
        return csrf_refused(request, operator)
    try:
        async with transaction(context) as session:
            await pages.reject(session, operator.key, application_id, form.get("reason", ""))
    except (AppError, ValidationError) as exc:
        return await _decision_failed(request, context, operator, exc)
    return redirect(
        f"{COOKIE_PATH}/applications",
        notice="rejected",
        creator=form.get("creator_id", application_id),
    )


async def _decision_failed(
    request: Request, context: Context, operator: Operator, exc: Exception
) -> Response:
    if isinstance(exc, AppError):
        message, status_code = _with_details(exc), exc.status_code
    elif isinstance(exc, ValidationError):
        message, status_code = forms.validation_message(exc), 422
    else:
        message, status_code = str(exc), 422
    return await _applications(
        request, context, operator, "pending_review", error=message, status_code=status_code
    )


@router.get("/creators/{creator_id}")
async def creator_page(
    creator_id: str, request: Request, context: ContextDep, operator: OperatorDep
) -> Response:
    try:
        async with transaction(context) as session:
            creator = await pages.creator(session, operator.key, creator_id)
    except AppError as exc:
        return _error(request, operator, exc)
    return render(request, "creator.html", operator, creator=creator)


def _with_details(exc: AppError) -> str:
    details = [d["msg"] for d in exc.details or [] if isinstance(d, dict) and d.get("msg")]
    return f"{exc.message}: {'; '.join(details)}" if details else exc.message


def _error(request: Request, operator: Operator, exc: AppError) -> Response:
    return render(
        request,
        "error.html",
        operator,
        status_code=exc.status_code,
        title="Not possible",
        message=exc.message,
    )


# --- vouchers -------------------------------------------------------------------------------


@router.get("/vouchers")
async def vouchers_page(request: Request, context: ContextDep, operator: OperatorDep) -> Response:
    async with transaction(context) as session:
        pool, winners = await pages.voucher_pool(session, context, operator.key)
    return render(request, "vouchers.html", operator, pool=pool, winners=winners)


# --- months ---------------------------------------------------------------------------------


@router.get("/months")
async def months_page(
    context: ContextDep, operator: OperatorDep, month: str | None = None
) -> Response:
    """The month picker's target; without one, the running program month."""
    if month is None or not MONTH.fullmatch(month):
        month = current_month(context.settings.timezone)
    return redirect(f"{COOKIE_PATH}/months/{month}")


@router.get("/months/{month}")
async def month_page(
    month: MonthParam, request: Request, context: ContextDep, operator: OperatorDep
) -> Response:
    async with transaction(context) as session:
        board = await pages.leaderboard(session, context, operator.key, month)
    return render(
        request,
        "month.html",
        operator,
        month=month,
        board=board,
        neighbours=_neighbours(month),
        can_settle=pages.can_settle_now(month, context),
    )


def _neighbours(month: str) -> tuple[str, str]:
    year, number = map(int, month.split("-"))
    previous = f"{year - 1}-12" if number == 1 else f"{year}-{number - 1:02d}"
    following = f"{year + 1}-01" if number == 12 else f"{year}-{number + 1:02d}"
    return previous, following


@router.get("/months/{month}/creators")
async def find_creator_month(
    month: MonthParam, operator: OperatorDep, creator_id: str = ""
) -> Response:
    """The month page's look-up form: any creator with activity, certified or not."""
    if not creator_id.strip():
        return redirect(f"{COOKIE_PATH}/months/{month}")
    return redirect(f"{COOKIE_PATH}/months/{month}/creators/{quote(creator_id.strip(), safe='')}")


@router.get("/months/{month}/creators/{creator_id}")
async def creator_month_page(
    month: MonthParam,
    creator_id: str,
    request: Request,
    context: ContextDep,
    operator: OperatorDep,
) -> Response:
    try:
        async with transaction(context) as session:
            view = await pages.creator_month(
                session, context, operator.key, creator_id, month, _language(request)
            )
    except AppError as exc:
        return _error(request, operator, exc)
    return render(request, "creator_month.html", operator, month=month, view=view)


@router.get("/months/{month}/settle")
async def settle_confirmation(
    month: MonthParam, request: Request, context: ContextDep, operator: OperatorDep
) -> Response:
    """The confirmation step: what settling will freeze, and one button to do it."""
    async with transaction(context) as session:
        board = await pages.leaderboard(session, context, operator.key, month)
    return render(
        request,
        "settle.html",
        operator,
        month=month,
        board=board,
        can_settle=pages.can_settle_now(month, context),
    )


@router.post("/months/{month}/settle")
async def settle(
    month: MonthParam, request: Request, context: ContextDep, operator: OperatorDep
) -> Response:
    form = await checked_form(request, operator)
    if form is None:
        return csrf_refused(request, operator)
    if form.get("confirm") != month:
        return render(
            request,
            "error.html",
            operator,
            status_code=422,
            title="Not settled",
            message=f"Settling needs the confirmation of the month ({month}).",
        )
    try:
        async with transaction(context) as session:
            await pages.settle(session, context, operator.key, month)
    except AppError as exc:
        return _error(request, operator, exc)
    return redirect(f"{COOKIE_PATH}/months/{month}", notice="settled", month=month)


@router.get("/months/{month}/preview")
async def preview_page(
    month: MonthParam, request: Request, context: ContextDep, operator: OperatorDep
) -> Response:
    """What-if: the month's settlement under other settings, beside the current one. It
    changes nothing (a GET, like the API's preview)."""
    given = {
        name: request.query_params[name].strip()
        for name in pages.PREVIEW_PARAMETERS
        if request.query_params.get(name, "").strip()
    }
    result, error, status_code = None, None, 200
    if given:
        try:
            async with transaction(context) as session:
                result = await pages.what_if(session, context, month, given)
        except AppError as exc:
            error, status_code = _with_details(exc), exc.status_code
    return render(
        request,
        "preview.html",
        operator,
        status_code=status_code,
        month=month,
        given=given,
        parameters=pages.PREVIEW_PARAMETERS,
        result=result,
        error=error,
    )


# --- consumers and dead letters -------------------------------------------------------------


@router.get("/consumers")
async def consumers_page(request: Request, context: ContextDep, operator: OperatorDep) -> Response:
    async with transaction(context) as session:
        groups, letters = await pages.consumers(session, context, operator.key)
    return render(
        request,
        "consumers.html",
        operator,
        groups=groups,
        letters=letters,
        replayable=set(pages.replayable_groups()),
    )


@router.post("/dead-letters/replay")
async def replay(request: Request, context: ContextDep, operator: OperatorDep) -> Response:
    form = await checked_form(request, operator)
    if form is None:
        return csrf_refused(request, operator)
    group = form.get("group", "")
    if group not in pages.replayable_groups():
        return render(
            request,
            "error.html",
            operator,
            status_code=422,
            title="Not replayed",
            message=f"{group!r} is not a consumer group whose parked events can be replayed.",
        )
    report = await pages.replay(
        context, group, form.get("event_id") or None, form.get("source") or None
    )
    return redirect(
        f"{COOKIE_PATH}/consumers",
        notice="replayed",
        group=group,
        applied=report.applied,
        failed=report.failed,
        not_replayable=report.not_replayable,
    )
