"""examples/grafana/sentifyd-bridge.json asks only for what /metrics exports.

Every PromQL expression of the dashboard (panel targets and template variables) is read by a small
tokenizer into the metrics it selects, their label matchers and its grouping labels, and checked
against a live scrape of a bridge that has served traffic: each metric name (histograms'
``_bucket``, ``_sum`` and ``_count`` included) must be a series the scrape has, each label one
that series carries, and each literal value one the traffic produced.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from quart import Quart

from support.app import Clock, login
from support.config import make_settings
from support.ops import METRICS_TOKEN

DASHBOARD = Path(__file__).resolve().parents[1] / "examples" / "grafana" / "sentifyd-bridge.json"
# Labels Prometheus adds to every series it scrapes; /metrics itself never carries them.
TARGET_LABELS = frozenset({"job", "instance"})
FUNCTIONS = frozenset(
    {"sum", "max", "min", "avg", "count", "topk", "bottomk", "rate", "irate", "increase"}
    | {"histogram_quantile", "clamp_min", "clamp_max", "abs", "round", "vector", "label_values"}
)
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
OPERATOR_WORDS = frozenset({"and", "or", "unless", "bool", "offset"})

TOKEN = re.compile(
    r"""
    (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<range>\[[^\]]*\])
  | (?P<variable>\$\{?\w+\}?)
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|>=|<=|[=<>+\-*/%^])
  | (?P<punct>[(){},])
  | (?P<space>\s+)
    """,
    re.VERBOSE,
)


@dataclass
class Selector:
    metric: str
    matchers: list[tuple[str, str, str]] = field(default_factory=list)  # label, op, value


@dataclass
class Query:
    selectors: list[Selector] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)


def tokenize(expr: str) -> list[tuple[str, str]]:
    tokens, at = [], 0
    while at < len(expr):
        match = TOKEN.match(expr, at)
        if not match:
            raise ValueError(f"cannot read {expr[at:]!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            tokens.append((kind, match.group()))
        at = match.end()
    return tokens


def parse(expr: str) -> Query:
    """Read an expression's selectors and grouping labels; refuse what it does not know."""
    tokens = tokenize(expr)
    query, i = Query(), 0

    def at(offset: int) -> str:
        return tokens[i + offset][1] if i + offset < len(tokens) else ""

    while i < len(tokens):
        kind, text = tokens[i]
        if kind == "ident" and text in GROUPING and at(1) == "(":
            i += 2
            while at(0) != ")":
                if tokens[i][0] == "ident":
                    query.grouping.add(tokens[i][1])
                i += 1
        elif kind == "ident" and (at(1) == "(" or at(1) in GROUPING):
            if text not in FUNCTIONS:
                raise ValueError(f"unknown function {text!r} in {expr!r}")
        elif kind == "ident" and text not in OPERATOR_WORDS:
            selector = Selector(text)
            if at(1) == "{":
                i += 2
                while at(0) != "}":
                    label, op, value = tokens[i][1], tokens[i + 1][1], tokens[i + 2][1]
                    selector.matchers.append((label, op, json.loads(value)))
                    i += 4 if at(3) == "," else 3
            query.selectors.append(selector)
        elif text == "{":
            raise ValueError(f"a selector without a metric name in {expr!r}")
        i += 1
    return query


def expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Yield (where, PromQL) for every panel target and every query variable."""

    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for target in panel.get("targets", []):
                yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
            yield from walk(panel.get("panels", []))

    yield from walk(dashboard["panels"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        # Grafana runs query.query and shows definition: both must hold.
        for text in {query["query"] if isinstance(query, dict) else query, variable["definition"]}:
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", text.strip())
            assert match, f"variable {variable['name']}: only label_values(selector, label)"
            # The label asked for is grouped over, as a "by" would be.
            yield f"variable {variable['name']}", f"sum by ({match[2]}) ({match[1]})"


@dataclass
class Scrape:
    labels: dict[str, set[str]]  # sample name -> the label names its series carry
    values: dict[tuple[str, str], set[str]]  # (sample name, label) -> the values seen
    families: set[str]


def read_scrape(text: str) -> Scrape:
    labels: dict[str, set[str]] = defaultdict(set)
    values: dict[tuple[str, str], set[str]] = defaultdict(set)
    families = set()
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for sample in family.samples:
            labels[sample.name].update(sample.labels)
            for name, value in sample.labels.items():
                values[(sample.name, name)].add(value)
    return Scrape(dict(labels), dict(values), families)


def problems(where: str, expr: str, scrape: Scrape) -> list[str]:
    """Say what in ``expr`` the scrape does not have."""
    try:
        query = parse(expr)
    except ValueError as exc:
        return [f"{where}: {exc}"]
    found, known = [], set(TARGET_LABELS)
    for selector in query.selectors:
        if selector.metric not in scrape.labels:
            found.append(f"{where}: no metric {selector.metric}")
            continue
        carried = scrape.labels[selector.metric]
        known |= carried
        for label, op, value in selector.matchers:
            if label not in carried | TARGET_LABELS:
                found.append(f"{where}: {selector.metric} has no label {label}")
            elif op in ("=", "!=") and "$" not in value and label not in TARGET_LABELS:
                if value not in scrape.values.get((selector.metric, label), set()):
                    found.append(f"{where}: no {selector.metric} series has {label}={value!r}")
    if not query.selectors:
        found.append(f"{where}: selects no metric")
    found += [f"{where}: no metric in it has label {name}" for name in query.grouping - known]
    return found


def dashboard_problems(dashboard: dict[str, Any], scrape: Scrape) -> list[str]:
    return [
        issue for where, expr in expressions(dashboard) for issue in problems(where, expr, scrape)
    ]


# --- a bridge that has served traffic --------------------------------------------------------


@pytest.fixture
async def scrape(make_app: Any, clock: Clock) -> Scrape:
    app: Quart = make_app(make_settings(env={"BRIDGE_METRICS_TOKEN": METRICS_TOKEN}))
    async with app.test_app():
        client = app.test_client()
        assert (await client.get("/request_tokens")).status_code == 401
        login(client, app)
        handle = (await (await client.get("/request_tokens")).get_json())["tokens"]["refreshToken"]
        assert (await client.get("/request_tokens")).status_code == 200  # a cache hit
        refreshed = await client.get("/request_tokens", query_string={"refreshToken": handle})
        assert refreshed.status_code == 200
        clock.advance(30)  # past the grace window: the rotated handle is a replay
        replay = await client.get("/request_tokens", query_string={"refreshToken": handle})
        assert replay.status_code == 401
        answer = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert answer.status_code == 200
        return read_scrape((await answer.get_data()).decode())


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


# --- the dashboard ---------------------------------------------------------------------------


def test_every_query_names_only_exported_metrics_labels_and_values(scrape: Scrape) -> None:
    assert dashboard_problems(load_dashboard(), scrape) == []


def test_every_exported_metric_has_a_panel(scrape: Scrape) -> None:
    queried = {
        selector.metric
        for _, expr in expressions(load_dashboard())
        for selector in parse(expr).selectors
    }
    bridge_families = {
        name
        for name in scrape.families
        # prometheus_client's *_created series say when a series began: nothing to chart.
        if name.startswith("sentifyd_bridge_") and not name.endswith("_created")
    }
    covered = {f for f in bridge_families if any(m.startswith(f) for m in queried)}
    assert covered == bridge_families


def test_histograms_are_read_from_their_bucket_sum_and_count_series(scrape: Scrape) -> None:
    queried = {s.metric for _, expr in expressions(load_dashboard()) for s in parse(expr).selectors}
    for suffix in ("_bucket", "_sum", "_count"):
        assert f"sentifyd_bridge_upstream_call_seconds{suffix}" in queried


def test_panels_have_unique_ids_and_use_the_datasource_variable() -> None:
    dashboard = load_dashboard()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


# --- the checker fails when a query does -----------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        (
            "sentifyd_bridge_token_requests_total{",
            "sentifyd_bridge_token_request_total{",
            "no metric",
        ),
        ("_upstream_call_seconds_bucket", "_upstream_call_seconds_buckets", "no metric"),
        ("_upstream_call_seconds_count", "_upstream_call_seconds", "no metric"),
        ('avatar=~\\"$avatar\\"', 'avatars=~\\"$avatar\\"', "has no label avatars"),
        ('result=\\"hit\\"', 'result=\\"hits\\"', "series has result='hits'"),
        ("sum by (outcome)", "sum by (outcomes)", "has label outcomes"),
        ("sum by (le, call)", "sum by (le, kind)", "has label kind"),
        ("rate(sentifyd_bridge_token_cache_total", "rat(sentifyd_bridge_token_cache_total", "rat"),
        ('{job=~\\"$job\\"}, avatar)', '{job=~\\"$job\\"}, avatr)', "has label avatr"),
    ],
)
def test_a_wrong_name_in_a_query_is_reported(
    scrape: Scrape, old: str, new: str, complaint: str
) -> None:
    text = DASHBOARD.read_text()
    assert old in text, f"{old!r} is no longer in the dashboard: update this test"
    found = dashboard_problems(json.loads(text.replace(old, new, 1)), scrape)
    assert found and any(complaint in issue for issue in found), found
