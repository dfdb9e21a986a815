"""Take the screenshot of the operator page that the README shows: docs/images/ops.png.

    .venv/bin/python scripts/screenshot_ops.py                  # a demo system of its own
    .venv/bin/python scripts/screenshot_ops.py --url http://127.0.0.1:8000 --api-key KEY \
        --month 2026-10                                         # a running system, as it is

Without --url it starts `creator-activity serve` on a throw-away embedded PostgreSQL, puts a
small settled month in through the HTTP API (certified creators with Chinese display names,
their posts and interactions), and photographs that month's leaderboard. The browser is
Debian's Chromium (`apt-get install chromium fonts-noto-cjk`: without the CJK fonts the names
are empty boxes), driven by Playwright; never a downloaded browser.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).parent / "creator-activity"
CHROMIUM = "/usr/bin/chromium"
DEMO_MONTH = "2026-10"

# (creator id, display name, qualifying posts in the month, likes received per post)
DEMO_CREATORS = (
    ("c-lin", "林小雨", 41, 6),
    ("c-wang", "王大锤", 38, 4),
    ("c-chen", "陈静 Crypto", 35, 5),
    ("c-zhao", "赵钱孙", 33, 2),
    ("c-liu", "刘一手", 31, 3),
    ("c-sun", "孙悟空研究所", 30, 1),
    ("c-amy", "Amy 链上日记", 30, 2),
    ("c-zhou", "周末投研", 24, 4),
    ("c-wu", "吴老师", 12, 1),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running system (default: start a demo system)")
    parser.add_argument("--api-key", help="an admin key of that system")
    parser.add_argument("--month", default=DEMO_MONTH, help="the leaderboard's month")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "ops.png")
    parser.add_argument("--width", type=int, default=1000, help="viewport width in px")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is missing: apt-get install -y chromium fonts-noto-cjk")

    if args.url:
        if not args.api_key:
            sys.exit("--api-key is needed with --url")
        photograph(args.url, args.api_key, args.month, args.out, args.width)
        return
    with tempfile.TemporaryDirectory(prefix="ca-screenshot-") as data_dir:
        key = "ca_demo_" + secrets.token_urlsafe(24)
        url, server = start_demo_system(Path(data_dir), key)
        try:
            seed_demo_month(url, key)
            photograph(url, key, DEMO_MONTH, args.out, args.width)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)


def start_demo_system(data_dir: Path, key: str) -> tuple[str, subprocess.Popen]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREATOR_ACTIVITY_")}
    env.update(
        CREATOR_ACTIVITY_DATA_DIR=str(data_dir),
        CREATOR_ACTIVITY_BOOTSTRAP_ADMIN_KEY=key,
        CREATOR_ACTIVITY_LOG_LEVEL="WARNING",
    )
    server = subprocess.Popen([str(CLI), "serve", "--port", str(port)], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return url, server
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            sys.exit("the demo system did not start")
        time.sleep(0.3)


def seed_demo_month(url: str, key: str) -> None:
    """The demo month through the HTTP API, then settled."""
    rng = random.Random(2026)
    start = datetime(2026, 10, 1, 10, 0, tzinfo=UTC)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as api:
        for creator_id, name, posts, likes in DEMO_CREATORS:
            form = {
                "creator_id": creator_id,
                "display_name": name,
                "platforms": [
                    {"platform": "x", "handle": creator_id, "followers": 4200, "verified": True}
                ],
            }
            application = api.post("/v1/applications", json=form).raise_for_status().json()
            api.post(
                f"/v1/admin/applications/{application['id']}/approve",
                json={"certified_at": "2026-09-01T00:00:00+08:00"},
            ).raise_for_status()
            events = []
            for n in range(posts):
                moment = start + timedelta(days=n % 30, hours=n // 30)
                post_id = f"{creator_id}-p{n}"
                text = "".join(chr(rng.randrange(0x4E00, 0x9FA5)) for _ in range(80))
                events.append(_event(post_id, "post.created", moment, creator_id, text=text))
                for fan in range(likes + rng.randrange(3)):
                    events.append(
                        _event(
                            f"{post_id}-like-{fan}",
                            "interaction.created",
                            moment + timedelta(minutes=5),
                            creator_id,
                            post_id=post_id,
                            actor_id=f"fan-{fan}",
                        )
                    )
            api.post("/v1/events", json=events).raise_for_status()
        deadline = time.monotonic() + 120
        while True:
            settled = api.post(f"/v1/admin/months/{DEMO_MONTH}/settle")
            if settled.status_code == 200:
                return
            if time.monotonic() > deadline:
                sys.exit(f"could not settle {DEMO_MONTH}: {settled.text}")
            time.sleep(0.5)


def _event(event_id: str, type_: str, moment: datetime, creator_id: str, **data) -> dict:
    if type_ == "post.created":
        data = {"post_id": event_id, "image_count": 0, "kind": "original", **data}
    else:
        data = {"kind": "like", **data}
    return {
        "id": event_id,
        "type": type_,
        "time": moment.isoformat(),
        "source": "square",
        "data": {"creator_id": creator_id, **data},
    }


def photograph(url: str, key: str, month: str, out: Path, width: int) -> None:
    """Sign in to /ops with the key, open the month's leaderboard, save a full-page PNG."""
    out.parent.mkdir(parents=True, exist_ok=True)
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        page = browser.new_page(viewport={"width": width, "height": 900}, locale="zh-CN")
        page.goto(f"{url}/ops/sign-in")
        page.get_by_label("Admin API key").fill(key)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/ops/applications")
        page.goto(f"{url}/ops/months/{month}")
        page.screenshot(path=str(out), full_page=True)
        browser.close()
    print(out)


if __name__ == "__main__":
    main()
