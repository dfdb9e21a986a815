"""The operator console as an operator uses it: in Chromium, at phone width (375 px)."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

from playwright.async_api import expect

from tests.browser.conftest import sign_in
from tests.browser.program import MONTH, apply, program_month
from tests.system import ADMIN_KEY


async def test_sign_in_then_out(page, console):
    await page.goto(console.at("/ops/vouchers"))
    await expect(page).to_have_url(console.at("/ops/sign-in"))

    await sign_in(page, console)
    await expect(page.get_by_role("heading", name="Applications")).to_be_visible()
    await expect(page.get_by_text("bootstrap-admin")).to_be_visible()

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_text("Signed out.")).to_be_visible()
    await page.goto(console.at("/ops/vouchers"))
    await expect(page).to_have_url(console.at("/ops/sign-in"))


async def test_a_wrong_key_is_refused(page, console):
    await sign_in(page, console, "ca_not-a-key-of-this-system")
    await expect(page.get_by_role("alert")).to_have_text(
        "Unknown or revoked API key: sign in with an admin key."
    )
    await page.goto(console.at("/ops/applications"))
    await expect(page).to_have_url(console.at("/ops/sign-in"))


async def test_approve_an_application_and_see_the_badge(page, console):
    await apply(console.system, "c-mei", "梅子")
    await sign_in(page, console)

    card = page.locator("article.application", has_text="c-mei")
    await expect(card.get_by_text("Eligible: followers on one platform")).to_be_visible()
    await card.get_by_role("button", name="Approve").click()
    await expect(page.get_by_role("status")).to_contain_text("Approved: c-mei is certified")
    await expect(page.locator("article.application", has_text="c-mei")).to_have_count(0)

    # The badge follows through the bus: the creator page shows it once the batch is applied.
    deadline = time.monotonic() + 20
    await page.goto(console.at("/ops/creators/c-mei"))
    await expect(page.get_by_role("heading", name="梅子")).to_be_visible()
    await expect(page.locator("#creator-status")).to_have_text("certified")
    while not await page.locator("#badges .badge").count():
        assert time.monotonic() < deadline, "the certification badge never showed"
        await asyncio.sleep(0.2)
        await page.reload()
    await expect(page.locator("#badges .badge")).to_have_text("certification")


async def test_reject_an_application_with_a_reason(page, console):
    await apply(console.system, "c-yu", "余生")
    await sign_in(page, console)
    card = page.locator("article.application", has_text="c-yu")
    await card.get_by_label("Reason for rejecting").fill("账号与申请不符")
    await card.get_by_role("button", name="Reject").click()
    await expect(page.get_by_role("status")).to_contain_text("Rejected the application of c-yu")

    await page.goto(console.at("/ops/applications?status=rejected"))
    await expect(page.locator("article.application", has_text="c-yu")).to_contain_text(
        "Rejected by bootstrap-admin: 账号与申请不符"
    )


async def test_settle_a_month_and_see_the_payouts(page, console):
    await program_month(console.system)
    await sign_in(page, console)
    await page.goto(console.at(f"/ops/months/{MONTH}"))
    await expect(page.locator("#month-status")).to_have_text("live")
    await expect(page.locator("#rank-c-lin")).to_contain_text("林小雨")
    await expect(page.locator("#rank-c-short")).to_contain_text("1 more posts needed")

    await page.get_by_role("link", name=f"Settle {MONTH}…").click()
    await expect(page.get_by_role("heading", name=f"Settle {MONTH}")).to_be_visible()
    await page.get_by_role("button", name=f"Settle {MONTH} now").click()

    await expect(page.get_by_role("status")).to_contain_text(f"Settled {MONTH}")
    await expect(page.locator("#month-status")).to_have_text("settled")
    payouts = {
        creator: Decimal(await page.locator(f"#rank-{creator} td.payout").inner_text())
        for creator in ("c-lin", "c-wang", "c-zhao", "c-short")
    }
    assert sum(payouts.values()) == Decimal("1500.00")
    assert payouts["c-short"] == Decimal("0.00")
    assert payouts["c-lin"] > payouts["c-wang"] > payouts["c-zhao"] > 0
    # the same as the API's settlement
    ranking = await console.system.client.get(
        f"/v1/rankings/{MONTH}", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert {e["creator_id"]: Decimal(e["payout"]) for e in ranking.json()["entries"]} == payouts
    await expect(page.locator("svg.chart")).to_contain_text("林小雨")

    await page.goto(console.at(f"/ops/months/{MONTH}/creators/c-short"))
    await expect(page.get_by_text("1 more original quality post needed")).to_be_visible()


async def test_the_what_if_shows_a_changed_payout(page, console):
    await program_month(console.system)
    await sign_in(page, console)
    await page.goto(console.at(f"/ops/months/{MONTH}"))
    await page.get_by_role("link", name="What if…").click()

    await page.get_by_label("min posts").fill("5")  # only c-lin has 5 or more
    await page.get_by_role("button", name="Preview").click()
    row = page.locator("#preview-c-lin")
    await expect(row.locator("td.payout")).to_have_text("1500.00")
    await expect(page.locator("#preview-c-wang td.payout")).to_have_text("0.00")
    assert Decimal(await row.locator("td.difference").inner_text()) > 0
    assert Decimal(await page.locator("#preview-c-wang td.difference").inner_text()) < 0
    # nothing changed: the month is still live
    await page.goto(console.at(f"/ops/months/{MONTH}"))
    await expect(page.locator("#month-status")).to_have_text("live")
