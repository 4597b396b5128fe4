"""The monitoring that ships with Handoff holds together: Prometheus accepts its
configuration and rules, the rules' promtool unit tests pass, every alert is shown both
firing and staying quiet and links a runbook section that exists, and every dashboard panel
has a valid query."""

from __future__ import annotations

import json
import re
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from support.prometheus import ROOT, binaries

import handoff_router.metrics  # noqa: F401  (registers the router's own metrics)
import handoff_runtime.metrics  # noqa: F401

pytestmark = pytest.mark.integration

PROMETHEUS = ROOT / "deploy" / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RECORDING_RULES = PROMETHEUS / "recording_rules.yml"
ALERT_RULES = PROMETHEUS / "alert_rules.yml"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
RUNBOOK = ROOT / "deploy" / "RUNBOOK.md"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "handoff.json"
JOBS = {"handoff-scorer", "handoff-router", "handoff-feedback"}


def promtool(*args: str | Path) -> str:
    """Run promtool from the repository root; fail with its output unless it exits 0."""
    _, tool = binaries()
    command = [str(tool), *map(str, args)]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{output}"
    return output


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule
        for group in load_yaml(ALERT_RULES)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included, rows themselves left out."""
    found = []
    for panel in dashboard["panels"]:
        found.extend(panel.get("panels", []))
        if panel.get("type") != "row":
            found.append(panel)
    return found


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def exposed_metric_names() -> set[str]:
    """The series names the services' metrics produce (counters with `_total`, histograms
    as `_bucket`, `_count` and `_sum`)."""
    names = set()
    for family in REGISTRY.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}{suffix}" for suffix in ("_bucket", "_count", "_sum")}
        else:
            names.add(family.name)
    return names


def series_names(expr: str) -> set[str]:
    """The Handoff series (handoff_*) and recorded series (level:metric:operations) a PromQL
    expression or a promtool input series names."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    tokens = re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_strings)
    return {t for t in tokens if t.startswith("handoff_") or ":" in t}


def test_prometheus_accepts_the_configuration_and_its_rule_files() -> None:
    output = promtool("check", "config", CONFIG)
    assert "2 rule files found" in output, output
    jobs = {job["job_name"] for job in load_yaml(CONFIG)["scrape_configs"]}
    assert jobs == JOBS


def test_rule_files_are_valid() -> None:
    promtool("check", "rules", RECORDING_RULES, ALERT_RULES)


def test_rule_unit_tests_pass() -> None:
    assert RULE_TESTS, "no promtool unit tests in deploy/prometheus/tests"
    promtool("test", "rules", *RULE_TESTS)


def test_rules_dashboard_and_rule_tests_name_only_series_that_exist() -> None:
    """A misspelt metric would go unnoticed: alerts stay quiet and dashboard queries fall
    back to `vector(0)`."""
    recording = [rule for group in load_yaml(RECORDING_RULES)["groups"] for rule in group["rules"]]
    known = exposed_metric_names() | {rule["record"] for rule in recording}
    named: dict[str, set[str]] = defaultdict(set)
    for rule in [*recording, *alert_rules()]:
        for name in series_names(rule["expr"]):
            named[name].add(rule.get("record") or rule["alert"])
    for panel in dashboard_panels(json.loads(DASHBOARD.read_text())):
        for target in panel["targets"]:
            for name in series_names(target["expr"]):
                named[name].add(f"panel {panel['title']!r}")
    for path in RULE_TESTS:
        for case in load_yaml(path)["tests"]:
            for series in case.get("input_series", []):
                for name in series_names(series["series"].partition("{")[0]):
                    named[name].add(f"{path.name}: {case['name']}")
    unknown = {name: sorted(users) for name, users in named.items() if name not in known}
    assert not unknown, f"series no service exposes and no rule records: {unknown}"
    assert "handoff_lead_latency_seconds_bucket" in named


def test_every_alert_is_tested_firing_and_quiet() -> None:
    alerts = {rule["alert"] for rule in alert_rules()}
    firing: dict[str, int] = defaultdict(int)
    quiet: dict[str, int] = defaultdict(int)
    for path in RULE_TESTS:
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                name = check["alertname"]
                assert name in alerts, f"{path.name} tests an alert that does not exist: {name}"
                if check.get("exp_alerts"):
                    firing[name] += 1
                else:
                    quiet[name] += 1
    assert sorted(alerts - set(firing)) == [], "alerts never shown firing"
    assert sorted(alerts - set(quiet)) == [], "alerts never shown staying quiet"


def test_every_alert_has_a_severity_annotations_and_a_runbook_section() -> None:
    headings = {
        github_anchor(match): match.strip()
        for match in re.findall(r"^#{1,6} (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    }
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        annotations = rule["annotations"]
        assert annotations.get("summary"), name
        assert annotations.get("description"), name
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert (ROOT / path).resolve() == RUNBOOK, f"{name}: runbook_url names {path}"
        assert headings.get(anchor) == name, f"{name}: no RUNBOOK.md section #{anchor}"


def test_every_dashboard_panel_has_a_valid_query(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard_panels(dashboard)
    assert panels
    queries = {}
    for panel in panels:
        exprs = [t.get("expr", "") for t in panel.get("targets", [])]
        assert exprs, f"panel {panel.get('title')!r} has no query"
        assert all(exprs), f"panel {panel.get('title')!r} has an empty query"
        for index, expr in enumerate(exprs):
            # the queries are run as they are (by Grafana, and by the end-to-end tests)
            assert "$" not in expr, f"panel {panel['title']!r} uses a template variable"
            queries[f"dashboard:panel_{panel['id']}_{index}"] = expr
    assert len({panel["id"] for panel in panels}) == len(panels), "panel ids repeat"
    # promtool parses PromQL offline only in rule files
    rules = tmp_path / "dashboard_queries.yml"
    rules.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "dashboard",
                        "rules": [{"record": name, "expr": q} for name, q in queries.items()],
                    }
                ]
            }
        )
    )
    promtool("check", "rules", rules)


def test_grafana_provisions_the_datasource_the_dashboard_uses() -> None:
    datasources = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    uids = {source["uid"] for source in datasources["datasources"]}
    dashboard = json.loads(DASHBOARD.read_text())
    used = {
        source["uid"]
        for panel in dashboard_panels(dashboard)
        for source in [panel.get("datasource"), *[t.get("datasource") for t in panel["targets"]]]
        if source
    }
    assert used, "the dashboard names no datasource"
    assert used <= uids, f"dashboard uses {used}, provisioned: {uids}"
    providers = load_yaml(GRAFANA / "provisioning" / "dashboards" / "handoff.yml")["providers"]
    assert [provider["type"] for provider in providers] == ["file"]
