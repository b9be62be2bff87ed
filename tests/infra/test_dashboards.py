"""Runbook § ALERTAS › Painéis: the operators' pages (Prometheus console templates on the edge,
behind the proxy's basic auth) render with data in a real browser.

Read-only: each page answers 401 without credentials and 200 with them. Drill (sandbox): some
traffic through the API (chat calls, one refused provider for the error graphs), a backup when
none has run yet, then each page (the overview, and one per inventory host) is rendered in
headless Chromium over HTTPS through the proxy; every graph must have answered with data
(points that are numbers, per expression) and the page must show no error (no JavaScript
exception, no failed load, no "Error loading data" / "No timeseries returned"). Screenshots go to
reports/dashboards/.

One tolerance, on purpose and narrow: the pgBackRest ages (issue 11's metrics) may have no data
while Prometheus has no such series at all; once it has them, they must be drawn.
"""

from __future__ import annotations

import base64
import time

import pytest

from ._chromium import Chromium
from ._support import REPO, Target, wait_until
from .test_tls_proxy import LOCAL_CA_ROOT, operator_credentials, proxy_get

OVERVIEW = "/consoles/techno-os-overview.html"
HOST_PAGE = "/consoles/techno-os-host.html?instance={}"
SCREENSHOTS = REPO / "reports" / "dashboards"
# Issue 11's metrics: a graph of them may be empty only while Prometheus has none of them.
NOT_YET_MERGED = (
    "pgbackrest_backup_last_good_timestamp_seconds",
    "pgbackrest_archive_last_segment_timestamp_seconds",
)

# Per graph: its element id, and per expression whether an error answered, how many series and
# how many numeric points came back, and whether the page shows an error text in the graph.
GRAPHS_JS = """
(function () {
  if (typeof PromConsole === "undefined") { return null; }
  return PromConsole._graph_registry.map(function (g) {
    var data = g.rendered_data || [];
    return {
      id: g.params.node.id,
      rendered: g.rendered_data !== null && g._xhrs.length === 0,
      shown_error: (g.graphTd.querySelector(".prom_graph_error") || {}).textContent || "",
      exprs: g.params.expr.map(function (expr, i) {
        var d = data[i], points = 0, series = 0;
        if (d && d.status === "success") {
          d.data.result.forEach(function (r) {
            series++;
            r.values.forEach(function (v) { if (!isNaN(parseFloat(v[1]))) { points++; } });
          });
        }
        return {expr: expr, status: d ? d.status : "none", error: d ? (d.error || "") : "",
                series: series, points: points};
      })
    };
  });
})()
"""


def pages(t: Target, hosts: list[Target]) -> dict[str, str]:
    return {
        "overview": OVERVIEW,
        **{f"host-{h.name}": HOST_PAGE.format(h.name) for h in hosts},
    }


@pytest.mark.readonly
@pytest.mark.role("edge")
def test_dashboard_pages_need_the_operators_credentials(target: Target, sandbox) -> None:
    credentials = operator_credentials(target)
    for name, path in pages(target, sandbox.hosts).items():
        anonymous = proxy_get(target, "prometheus", path)
        assert anonymous.status == 401, f"{name}: {anonymous.status} without credentials"
        if credentials:
            page = proxy_get(target, "prometheus", path, credentials=credentials)
            assert page.status == 200, f"{name}: {page.status}: {page.body[:300]}"
            assert "PromConsole.Graph" in page.body, f"{name}: no graph on the page"


def drive_traffic(api: Target) -> None:
    """Chat calls through the API (latency, tokens, requests) and a refused provider (errors)."""
    for n in range(20):
        body = {"model": "fake/echo", "messages": [{"role": "user", "content": f"dash {n}"}]}
        answer = api.api("POST", "/v1/chat/completions", body)
        assert answer.status == 200, f"chat call: {answer.status} {answer.body[:200]}"
    refused = api.api(
        "POST",
        "/v1/chat/completions",
        {
            # Outside every sandbox's allowlist (fake, openai, anthropic): 403 not_allowed.
            "model": "deepseek/deepseek-chat",
            "messages": [{"role": "user", "content": "x"}],
        },
    )
    assert refused.status in (403, 503), f"a refused provider answered {refused.status}"


@pytest.mark.drill
def test_every_dashboard_renders_with_data_in_chromium(
    sandbox, record_property, capsys: pytest.CaptureFixture[str]
) -> None:
    t = sandbox.the("edge")
    db = sandbox.the("db")
    credentials = operator_credentials(t)
    assert credentials, "no PROXY_BASIC_AUTH_PASSWORD for the sandbox (secrets file)"
    for api in sandbox.by_role("api"):
        drive_traffic(api)
    if not t.prom_values("techno_os_backup_last_success_timestamp_seconds"):
        db.check(f"{db.cfg('scripts_dir')}/backup_observability.sh")
    # Everything driven is scraped and the 5m rates have two samples of it.
    wait_until(
        lambda: (
            t.prom_values("sum(rate(llm_tokens_total[5m])) > 0")
            and t.prom_values("techno_os_backup_last_success_timestamp_seconds")
        ),
        timeout=120,
        interval=2,
        what="the traffic and the backup in Prometheus",
    )
    absent = {m for m in NOT_YET_MERGED if not t.prom_values(f"count({m})")}
    domain = t.data.get("public_domain", "verittadigital.com")
    sandboxed = t.data.get("tls_mode") == "internal"
    browser = Chromium(
        trust_pem=t.check("cat %s", LOCAL_CA_ROOT) if sandboxed else "",
        # The sandbox's names resolve nowhere: the browser goes to the edge as a client would.
        resolver_rules=f"MAP prometheus.{domain} {t.private_address}" if sandboxed else "",
    )
    token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
    failures: list[str] = []
    started = time.monotonic()
    try:
        for name, path in pages(t, sandbox.hosts).items():
            session = browser.page({"Authorization": f"Basic {token}"})
            browser.navigate(session, f"https://prometheus.{domain}{path}")
            graphs = wait_until(
                lambda s=session: (
                    (g := browser.evaluate(s, GRAPHS_JS)) and all(x["rendered"] for x in g) and g
                ),
                timeout=60,
                interval=1,
                what=f"{name}: every graph answered",
            )
            browser.screenshot(session, SCREENSHOTS / f"{name}.png")
            failures += [f"{name}: {p}" for p in browser.problems(session)]
            for graph in graphs:
                tolerated = all(any(m in e["expr"] for m in absent) for e in graph["exprs"])
                if graph["shown_error"] and not tolerated:
                    failures.append(f"{name} #{graph['id']}: shows {graph['shown_error']!r}")
                for e in graph["exprs"]:
                    if e["status"] != "success":
                        failures.append(f"{name} #{graph['id']}: {e['expr']}: {e['error']}")
                    elif e["points"] == 0 and not any(m in e["expr"] for m in absent):
                        failures.append(f"{name} #{graph['id']}: no data for {e['expr']}")
            record_property(f"graphs_{name}", len(graphs))
    finally:
        browser.close()
    with capsys.disabled():
        print(
            f"\n    dashboards: {len(pages(t, sandbox.hosts))} pages in "
            f"{time.monotonic() - started:.1f} s, screenshots in {SCREENSHOTS.relative_to(REPO)}"
            + (
                f"; tolerated without data (absent from Prometheus): {sorted(absent)}"
                if absent
                else ""
            )
        )
    assert not failures, "\n".join(failures)
