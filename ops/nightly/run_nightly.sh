#!/usr/bin/env bash
# Nightly runbook verification: the read-only suite (tests/infra -m readonly) against production,
# with the reports kept per run. Called by techno-os-verify.service and the CI workflow.
#
#   ops/nightly/run_nightly.sh
#
# Environment (defaults):
#   INVENTORY         inventories/prod.py
#   REPORTS_DIR       reports/nightly (one sub-directory per run: junit XML, summary, log)
#   KEEP_DAYS         30 (older run directories are deleted)
#   TECHNO_OS_PROD_*  read by inventories/prod.py (hosts, SSH user, key, port)
#
# Exit status: pytest's (0 all passed, 1 some check failed, 4 usage error such as a bad inventory).
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
readonly REPO_DIR
export INVENTORY="${INVENTORY:-inventories/prod.py}"
readonly REPORTS_DIR="${REPORTS_DIR:-reports/nightly}"
readonly KEEP_DAYS="${KEEP_DAYS:-30}"

prune_old_reports() {
    find "$REPORTS_DIR" -mindepth 1 -maxdepth 1 -type d -mtime "+$KEEP_DAYS" \
        -exec rm -rf -- {} +
}

main() {
    local stamp run_dir rc=0
    cd "$REPO_DIR"
    make --no-print-directory venv >/dev/null
    stamp="$(date -u +%Y%m%dT%H%M%SZ)"
    run_dir="$REPORTS_DIR/$stamp"
    mkdir -p "$run_dir"
    .venv/bin/pytest -p no:cacheprovider tests/infra -m readonly \
        --junitxml="$run_dir/infra-junit.xml" 2>&1 | tee "$run_dir/pytest.log" || rc=$?
    ln -sfn "$stamp" "$REPORTS_DIR/latest"
    prune_old_reports
    exit "$rc"
}

main "$@"
