"""The dashboards of docker-compose.yml (Prometheus and Grafana, deploy/) against the program.

No Docker here: the files are parsed, Prometheus's targets are checked against the compose
file's app servers, and every metric the Grafana dashboard queries is looked up in the
`/metrics` of a running system (in-process, after real events, on both buses).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from tests.system import interaction_created, post_created
from tests.test_compose import (
    MissingVariable,
    container_port,
    environment,
    interpolate,
    load_compose,
)

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"
DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
DASHBOARD = DASHBOARDS / "creator-activity.json"
# Series Prometheus makes itself, not the services.
PROMETHEUS_SERIES = {"up"}
# The series names of a metric family of each type, as the text format writes them.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}
# What an operator must find on the dashboard (issue 11).
REQUIRED = {
    "ingest rate by outcome": "creator_activity_ingest_events_total",
    "consumer lag per group": "creator_activity_consumer_lag",
    "batch latency per group": "creator_activity_consumer_batch_seconds_bucket",
    "dead letters": "creator_activity_dead_letters",
    "vouchers issued": "creator_activity_vouchers_issued",
    "the voucher cap": "creator_activity_vouchers_cap",
    "settlement runs": "creator_activity_settlements_total",
}


def compose_services() -> dict[str, dict]:
    return load_compose()["services"]


def app_servers() -> dict[str, int]:
    """The compose file's creator-activity servers and the port each listens on."""
    image = compose_services()["migrate"]["image"]
    return {
        name: container_port(service["command"])
        for name, service in compose_services().items()
        if service.get("image") == image and "--port" in service.get("command", [])
    }


def prometheus_config() -> dict:
    return yaml.safe_load(PROMETHEUS_CONFIG.read_text())


def mounts(service: dict) -> dict[str, str]:
    """target -> source of a service's bind mounts (short syntax), `:ro` dropped."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            found[target] = source
    return found


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of the dashboard."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard()["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


# --- PromQL, as much of it as the dashboard uses ---------------------------------------------

_NOT_SERIES = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
               "or", "unless", "offset", "inf", "nan"}  # fmt: skip
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def series_names(expr: str) -> set[str]:
    """The series a PromQL expression reads: identifiers that are not functions, keywords,
    label names (in `{...}` or `by (...)`), strings or durations (`[5m]`)."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}", "", bare)
    bare = re.sub(r"\[[^\]]*\]", "", bare)
    bare = _GROUPING.sub("", bare)
    names = set()
    for match in re.finditer(r"(?<![\w:.])[A-Za-z_:][\w:]*", bare):  # not the m of 5m
        if bare[match.end() :].lstrip().startswith("("):
            continue  # a function
        if match.group().lower() not in _NOT_SERIES:
            names.add(match.group())
    return names


def label_names(expr: str) -> set[str]:
    """Labels an expression groups by or matches on."""
    labels = {
        label.strip()
        for _, group in _GROUPING.findall(expr)
        for label in group.split(",")
        if label.strip()
    }
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    return labels


def declared_labels(family) -> set[str]:
    """The labels of a metric family: those of its samples or, before it has any (a counter of
    retries that never happened), those it is declared with in this process's registry, the
    one the in-process system serves."""
    if family.samples:
        return {label for sample in family.samples for label in sample.labels}
    collector = REGISTRY._names_to_collectors[family.name]  # no public way to ask
    return set(collector._labelnames)


def test_the_promql_reader_finds_series_and_labels():
    expr = (
        'histogram_quantile(0.95, sum by (group, le) (rate(a_bucket{job="x"}[$__rate_interval])))'
        " / ignoring(le) max without (instance) (b) + on (group) c offset 5m"
    )
    assert series_names(expr) == {"a_bucket", "b", "c"}
    assert label_names(expr) == {"group", "le", "job", "instance"}


# --- Prometheus ---------------------------------------------------------------------------


def test_prometheus_scrapes_every_app_server_of_the_compose_file():
    config = prometheus_config()
    assert re.fullmatch(r"\d+[smh]", config["global"]["scrape_interval"])
    targets = set()
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics", job["job_name"]
        for static in job["static_configs"]:
            targets |= set(static["targets"])
    servers = app_servers()
    assert set(servers) == {"ingest", "scoring", "badges"}
    assert targets == {f"{name}:{port}" for name, port in servers.items()}


def test_prometheus_and_grafana_run_with_the_repository_configuration():
    services = compose_services()
    prometheus = services["prometheus"]
    config_path = next(
        arg.split("=", 1)[1] for arg in prometheus["command"] if arg.startswith("--config.file=")
    )
    assert (REPO / mounts(prometheus)[config_path]).resolve() == PROMETHEUS_CONFIG

    grafana = services["grafana"]
    grafana_mounts = mounts(grafana)
    assert (REPO / grafana_mounts["/etc/grafana/provisioning"]).resolve() == PROVISIONING
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "creator-activity.yml").read_text())
    dashboards_path = providers["providers"][0]["options"]["path"]
    assert (REPO / grafana_mounts[dashboards_path]).resolve() == DASHBOARDS
    home = environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).parent == Path(dashboards_path) and (DASHBOARDS / Path(home).name).is_file()

    source = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (datasource,) = source["datasources"]
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus" and "prometheus" in services
    assert any(port.endswith(f":{url.port}") for port in prometheus["ports"])


def test_no_grafana_password_ships_with_the_compose_file():
    value = environment(compose_services()["grafana"])["GF_SECURITY_ADMIN_PASSWORD"]
    with pytest.raises(MissingVariable, match="GRAFANA_ADMIN_PASSWORD"):
        interpolate(value, {})
    assert interpolate(value, {"GRAFANA_ADMIN_PASSWORD": "s3cret"}) == "s3cret"


# --- the Grafana dashboard ----------------------------------------------------------------


def test_the_dashboard_is_grafana_json_on_the_provisioned_datasource():
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    source = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    uid = source["datasources"][0]["uid"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            assert target["refId"], panel["title"]
    queried = set().union(*(series_names(expr) for _, expr in queries()))
    missing = {what: name for what, name in REQUIRED.items() if name not in queried}
    assert not missing, f"the dashboard does not show {missing}"


async def test_every_metric_the_dashboard_queries_is_one_the_service_exports(bus, system):
    # Events first, so that the labelled series exist: each outcome, both groups' batches.
    body = [post_created("c-dash"), interaction_created("c-dash", actor_id="a-dash")]
    assert (await system.post_events(body)).status_code == 202
    assert (await system.post_events(body)).json()["duplicates"] == 2
    assert (await system.post_events([{"id": "no-type"}])).status_code == 422
    await system.wait_until_processed()

    response = await system.client.get("/metrics")
    assert response.status_code == 200
    families = list(text_string_to_metric_families(response.text))
    exported = {
        family.name + suffix: family
        for family in families
        for suffix in SUFFIXES.get(family.type, ("",))
    }
    target_labels = {"job", "instance"} | {
        label
        for job in prometheus_config()["scrape_configs"]
        for static in job["static_configs"]
        for label in static.get("labels", {})
    }
    for title, expr in queries():
        labels = set(target_labels)
        for name in series_names(expr) - PROMETHEUS_SERIES:
            assert name in exported, f"panel {title!r}: {name} is not exported by /metrics"
            labels |= declared_labels(exported[name])
        assert label_names(expr) <= labels, f"panel {title!r}: {label_names(expr) - labels}"

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples
    }
    for group in ("scoring", "badges"):
        assert samples[("creator_activity_consumer_lag", (("group", group),))] == 0
        assert samples[("creator_activity_dead_letters", (("group", group),))] == 0
        bucket = ("creator_activity_consumer_batch_seconds_count", (("group", group),))
        assert samples[bucket] >= 1
    for outcome in ("accepted", "duplicate", "rejected"):
        assert samples[("creator_activity_ingest_events_total", (("outcome", outcome),))] >= 1
    assert samples[("creator_activity_vouchers_cap", ())] == system.runtime.settings.voucher_cap
    assert samples[("creator_activity_vouchers_issued", ())] == 0
