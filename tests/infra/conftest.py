"""The runbook as testinfra suites: hosts from the pyinfra inventory, the drill guard, and the
one-screen summary that maps each runbook section to pass/fail.

    INVENTORY=inventories/prod.py pytest tests/infra -m readonly   # nightly, production
    pytest tests/infra -m drill                                    # sandbox only

Hosts: the inventory module named by $INVENTORY (default inventories/local.py), loaded with
pyinfra's own loader, so host data, group_data/<group>.py and group_data/all.py merge exactly as
for the deploy. Each host becomes a testinfra `ssh://` host with the inventory's key, port, user and
known-hosts file.

Roles: a test's `target` runs on the hosts of the roles its `@pytest.mark.role(...)` names
(`edge`, `db`, `api`, `backup`, or `any`), so the same suite checks one host holding every role
and a cluster where each role has its hosts. `sandbox` gives every host of the inventory, for
checks between hosts.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest
import testinfra

from . import verification_record
from ._support import (
    REPO,
    Target,
    hostspec,
    inventory_path,
    load_inventory,
    ssh_options,
)

# Runbook section of each module, in the runbook's order, for the summary.
SECTIONS = {
    "test_health.py": "Verificação de health (API, PostgreSQL)",
    "test_prometheus.py": "Prometheus (standalone)",
    "test_metrics.py": "Métricas LLM e queries PromQL",
    "test_circuit_breaker.py": "Diagnóstico circuit breaker [drill]",
    "test_streaming.py": "Streaming e fallbacks pelo proxy [drill]",
    "test_backup_restore.py": "Backup e restore",
    "test_backup_offsite.py": "Backup offsite (pgBackRest): WAL, verificação, teste de restore",
    "test_backup_pitr.py": "Restore a um ponto no tempo; WAL corrompido [drill]",
    "test_backup_host_loss.py": "Perda do host do banco [drill]",
    "test_cron_and_env.py": "Configurar cron; variáveis env obrigatórias",
    "test_exposure.py": "Exposição: portas só em loopback",
    "test_firewall.py": "Firewall entre papéis (nftables)",
    "test_alerting.py": "Alertas (Prometheus, Alertmanager)",
    "test_monitoring.py": "Alertas: banco, endpoint, hosts, o próprio monitoramento",
    "test_dashboards.py": "Painéis (console templates) [drill]",
    "test_tls_proxy.py": "Produção: proxy HTTPS (api., prometheus.)",
    "test_balancer.py": "Balanceamento (HAProxy): borda e front de cada host da API",
    "test_client_keys.py": "Chaves de cliente: limites, orçamento, revogação [drill]",
    "test_breakage.py": "Os checks falham quando algo quebra [drill]",
    "test_releases.py": "Releases, rollback e rotação de senha sem queda [drill]",
    "test_standin.py": "Stand-in do provider (self-test, local)",
}

_control_dir = tempfile.mkdtemp(prefix="tinfra-")
_outcomes: dict[str, str] = {}
_sections: dict[str, str] = {}
_owners: dict[str, str | None] = {}  # nodeid -> the host its `target` is (None: several)
_recorded: list[str] = []
_targets: list[Target] = []


def _hosts():
    try:
        return load_inventory()
    except Exception as exc:  # a broken inventory is a usage error, said plainly
        pytest.exit(f"cannot load the inventory {inventory_path()}: {exc}", returncode=4)


# --- hosts -------------------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record-verification",
        action="store_true",
        help="write each host's result (checks, failures, last success) into its node "
        "exporter's textfile directory (make verify; tests/infra/verification_record.py)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "role(*roles): the roles (edge, db, api, backup, any) a test's target holds"
    )
    config.addinivalue_line(
        "markers", "multi_api: needs two API hosts (deselected, not skipped, on one host)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A check of several API hosts does not apply to an inventory with one: deselected."""
    if not any(item.get_closest_marker("multi_api") for item in items):
        return
    if sum(1 for h in _hosts() if "api" in h.groups) >= 2:
        return
    kept = [item for item in items if not item.get_closest_marker("multi_api")]
    config.hook.pytest_deselected(items=[i for i in items if i not in kept])
    items[:] = kept


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("role")
    if marker is None or not marker.args:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid} uses `target` without @pytest.mark.role(...)"
        )
    roles = set(marker.args)
    hosts = [h for h in _hosts() if "any" in roles or roles & set(h.groups)]
    if not hosts:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: inventory {inventory_path()} has no host with role "
            f"{sorted(roles)}"
        )
    metafunc.parametrize(
        "target", hosts, ids=[h.name for h in hosts], indirect=True, scope="session"
    )


_connected: dict[str, Target] = {}


def connect(inv) -> Target:
    """The inventory host as a testinfra Target (one SSH control master per host and run)."""
    if inv.name not in _connected:
        options = ssh_options(inv.data, _control_dir)
        host = testinfra.get_host(hostspec(inv.name, inv.data), **options)
        probe = host.run("true")
        if probe.rc != 0:
            pytest.fail(f"{inv.name}: cannot run commands over SSH: {probe.stderr.strip()}")
        _connected[inv.name] = Target(inv, host)
        _targets.append(_connected[inv.name])
    return _connected[inv.name]


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> Target:
    return connect(request.param)


class Sandbox:
    """Every host of the inventory, for the checks between hosts."""

    def __init__(self) -> None:
        self.hosts = [connect(inv) for inv in _hosts()]

    def by_role(self, role: str) -> list[Target]:
        return [t for t in self.hosts if t.has(role)]

    def the(self, role: str) -> Target:
        found = self.by_role(role)
        assert len(found) == 1, f"expected one {role} host, found {[t.name for t in found]}"
        return found[0]


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    return Sandbox()


@pytest.fixture(scope="session")
def host(target: Target):
    """testinfra's `host`, for the modules that use its modules (file, service, ...)."""
    return target.host


@pytest.fixture
def drill_target(target: Target) -> Target:
    """The target of a drill; the collection guard has already refused non-disposable ones."""
    if not target.disposable:  # belt and braces: never change a non-disposable host
        pytest.fail(f"refusing to run a drill against {target.name}: not disposable")
    return target


# --- the drill guard ------------------------------------------------------------------------
def pytest_collection_finish(session: pytest.Session) -> None:
    here = Path(__file__).parent
    ours = [i for i in session.items if Path(str(i.path)).parent == here]
    drills = [i for i in ours if i.get_closest_marker("drill")]
    for item in ours:
        _sections[item.nodeid] = SECTIONS.get(Path(str(item.path)).name, Path(str(item.path)).name)
        callspec = getattr(item, "callspec", None)
        target = callspec.params.get("target") if callspec else None
        _owners[item.nodeid] = getattr(target, "name", None)
    if not drills or session.config.option.collectonly:
        return
    refused = [h.name for h in _hosts() if h.data.get("disposable") is not True]
    if refused:
        pytest.exit(
            f"REFUSED: {len(drills)} drill(s) selected against inventory {inventory_path()}, "
            f"whose host(s) {', '.join(refused)} are not disposable (group data `disposable` is "
            "not True). Drills stop services, inject faults and restore backups; they run only "
            "on the sandbox. Run the read-only checks with `-m readonly`.",
            returncode=4,
        )


# --- the one-screen summary --------------------------------------------------------------------
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.nodeid not in _sections:  # a test outside tests/infra, in a combined run
        return
    previous = _outcomes.get(report.nodeid, "passed")
    if report.failed:
        _outcomes[report.nodeid] = "failed"
    elif report.skipped and previous != "failed":
        _outcomes[report.nodeid] = "skipped"
    elif report.when == "call" and previous not in ("failed", "skipped"):
        _outcomes[report.nodeid] = "passed"


def summary_lines() -> list[str]:
    per_section: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for nodeid, outcome in _outcomes.items():
        section = _sections.get(nodeid, nodeid.split("::")[0])
        per_section[section][outcome].append(nodeid.split("::", 1)[-1])
    order = list(SECTIONS.values())
    lines = [f"Runbook verification: inventory {inventory_path()}"]
    for section in sorted(per_section, key=lambda s: order.index(s) if s in order else 99):
        counts = per_section[section]
        passed, failed, skipped = (len(counts[k]) for k in ("passed", "failed", "skipped"))
        verdict = "FAIL" if failed else ("PASS" if passed else "SKIP")
        extra = f", {skipped} skipped" if skipped else ""
        lines.append(f"  {verdict}  {section:<48} {passed}/{passed + failed} passed{extra}")
        lines += [f"          ✗ {name}" for name in counts["failed"]]
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _outcomes:
        return
    lines = summary_lines()
    if _recorded:
        lines += ["Verification recorded on the hosts (textfile collector):", *_recorded]
    terminalreporter.section("runbook sections")
    for line in lines:
        terminalreporter.write_line(line)
    xmlpath = getattr(config.option, "xmlpath", None)
    if xmlpath:
        out = Path(xmlpath).with_name(Path(xmlpath).stem + "-summary.txt")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(lines) + "\n")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Record the verification on the hosts when asked (while SSH is still open), then close
    the SSH control masters this run opened, and their socket directory."""
    if session.config.getoption("--record-verification") and _outcomes:
        _recorded.extend(
            verification_record.record(
                [connect(inv) for inv in _hosts()],
                verification_record.tally(_outcomes, _owners),
            )
        )
    for t in _targets:
        backend = t.host.backend
        cmd = ["ssh", "-O", "exit", "-o", f"ControlPath={_control_dir}/%C"]
        if backend.host.port:
            cmd += ["-p", str(backend.host.port)]
        if backend.host.user:
            cmd += ["-l", backend.host.user]
        subprocess.run([*cmd, backend.host.name], capture_output=True, timeout=10, check=False)
    shutil.rmtree(_control_dir, ignore_errors=True)


__all__ = ["REPO"]
