"""The deployment files: Prometheus config and alert rules (promtool), docker-compose.yml (docker compose), the
Grafana dashboard and its provisioning. A missing tool fails the test: CI installs promtool and docker-compose."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "streamrec.json"
ALERTS = {"StreamrecModelReleaseRefused", "StreamrecLatencySLOBreach", "StreamrecDeadLetterRate",
          "StreamrecConsumerLagGrowing", "StreamrecWorkerDown", "StreamrecHitRateDrop", "StreamrecProcessingErrors"}


def run(*command: str, cwd: Path = REPO) -> str:
    """Run a tool and return its output; fail (never skip) when it is missing or reports an error."""
    tool = shutil.which(command[0])
    assert tool is not None, f"{command[0]} is not installed (Debian: apt-get install prometheus docker-compose)"
    done = subprocess.run([tool, *command[1:]], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_prometheus_config_is_valid() -> None:
    out = run("promtool", "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert "SUCCESS" in out
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["rules.yml"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "streamrec"
    assert job["scrape_interval"] == "5s"
    assert job["static_configs"][0]["targets"] == ["worker-1:9310", "worker-2:9310"]


def test_alert_rules_are_valid_and_each_has_for_severity_and_text() -> None:
    out = run("promtool", "check", "rules", str(PROMETHEUS / "rules.yml"))
    assert f"SUCCESS: {len(ALERTS)} rules found" in out
    (group,) = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())["groups"]
    assert group["name"] == "streamrec"
    assert {rule["alert"] for rule in group["rules"]} == ALERTS
    for rule in group["rules"]:
        assert rule.get("for"), f"{rule['alert']} has no 'for'"
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
    slo = next(r for r in group["rules"] if r["alert"] == "StreamrecLatencySLOBreach")
    assert "streamrec_worker_latency_slo_seconds" in slo["expr"], "the SLO must come from the exported setting"


def test_alert_rules_fire_on_synthetic_series() -> None:
    """rules_test.yml: every alert fires on its series, and the near misses do not."""
    out = run("promtool", "test", "rules", "rules_test.yml", cwd=PROMETHEUS)
    assert "SUCCESS" in out
    tested = {case["alertname"] for test in yaml.safe_load((PROMETHEUS / "rules_test.yml").read_text())["tests"]
              for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert tested == ALERTS


def compose_command() -> list[str]:
    """`docker compose` (the v2 plugin) where it is installed, else Debian's `docker-compose` (1.29)."""
    plugin = shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True,
                                                        check=False).returncode == 0
    return ["docker", "compose"] if plugin else ["docker-compose"]


def test_compose_file_is_valid() -> None:
    run(*compose_command(), "-f", "docker-compose.yml", "config", "-q")
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    assert set(services) == {"kafka", "topics", "train", "worker-1", "worker-2", "prometheus", "grafana"}
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert str(services["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]) == "false"
    assert "healthcheck" in services["kafka"]
    for name in ("worker-1", "worker-2"):
        worker = services[name]
        assert worker["command"] in (["worker"], "worker")
        assert str(worker["environment"]["STREAMREC_METRICS_PORT"]) == "9310"
        assert worker["environment"]["STREAMREC_METRICS_HOST"] == "0.0.0.0"
        assert worker["environment"]["STREAMREC_HTTP_HOST"] == "0.0.0.0"
        assert worker["environment"]["STREAMREC_HTTP_ADVERTISED_HOST"] == worker["hostname"] == name
        assert "/readyz" in " ".join(worker["healthcheck"]["test"])
        assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert worker["depends_on"]["train"]["condition"] == "service_completed_successfully"
    assert any(str(v).endswith(":/data:ro") for v in services["train"]["volumes"])
    assert services["train"]["environment"]["STREAMREC_DATA_DIR"] == "/data"


def dashboard_targets(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) for every query of every panel, rows' nested panels included."""
    panels = [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])]]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", []) if t.get("expr")]


def test_dashboard_parses_and_every_panel_queries_prometheus() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "streamrec"
    assert dashboard["schemaVersion"] >= 39
    panels = dashboard["panels"]
    assert len(panels) >= 9
    for panel in panels:
        assert panel["type"] in ("timeseries", "stat"), panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
        assert any(t.get("expr") for t in panel.get("targets", [])), f"panel {panel['title']!r} has no query"
    exprs = " ".join(expr for _, expr in dashboard_targets(dashboard))
    for metric in ("streamrec_worker_event_to_recommendation_seconds_bucket", "streamrec_pipeline_stage_seconds",
                   "streamrec_worker_events_total", "streamrec_worker_recommendations_total",
                   "streamrec_worker_dead_letters_total", "streamrec_worker_invalid_events_total",
                   "streamrec_worker_consumer_lag_messages", "streamrec_live_hits_total",
                   "streamrec_live_opportunities_total", "streamrec_index_items", "streamrec_state_users",
                   "streamrec_model_info"):
        assert metric in exprs, f"no panel shows {metric}"


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    (source,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())[
        "datasources"]
    assert (source["uid"], source["type"], source["url"]) == ("prometheus", "prometheus", "http://prometheus:9090")
    (provider,) = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "streamrec.yml").read_text())[
        "providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
