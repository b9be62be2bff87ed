"""The `.env` of the database and API hosts (root, 0600): the compose project's variables on the
database host, the API's whole environment on API hosts (one file when a host holds both).

The API's part is checked by the release's own settings class (the artifact's wheel, not the
source tree), with exactly the values the container will get: a value the app would refuse at
start-up stops the deploy before any change instead.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files

from tasks import topology
from tasks.common import (
    DataRules,
    artifact,
    check_data,
    fail,
    render,
    required_secret,
    run_artifact,
)

# Where the API container finds the price overrides (mounted read-only by techno-os-release).
PRICES_IN_CONTAINER = "/etc/techno-os/llm-prices.json"

DATA: DataRules = {
    "llm_allowed_providers": (
        list,
        lambda v: all(isinstance(p, str) for p in v),
        "a list of provider names",
    ),
    "llm_provider": (str, bool, "a provider name"),
    "llm_timeout_seconds": ((int, float), lambda v: v > 0, "a positive number of seconds"),
    "llm_circuit_failure_threshold": (int, lambda v: v >= 1, "a whole number >= 1"),
    "llm_circuit_cooldown_seconds": ((int, float), lambda v: v > 0, "a positive number"),
    "llm_base_urls": (
        dict,
        lambda v: all(str(u).startswith(("http://", "https://")) for u in v.values()),
        "provider -> http(s) URL",
    ),
    "llm_default_max_tokens": (int, lambda v: v >= 1, "a whole number >= 1"),
    "key_default_models": (list, lambda v: all(isinstance(m, str) for m in v), "a list"),
    "key_default_max_tokens": (
        (int, type(None)),
        lambda v: v is None or v >= 1,
        "None or a whole number >= 1",
    ),
    "key_default_max_parallel": (int, lambda v: v >= 1, "a whole number >= 1"),
    "llm_prices": (dict, lambda v: True, "provider -> {default, models} (see llm/pricing.py)"),
    "api_docs_enabled": (bool, lambda v: True, "True or False"),
    "llm_standin": (bool, lambda v: True, "True or False"),
}


def base_urls() -> dict[str, str]:
    urls = dict(host.data.llm_base_urls)
    if host.data.llm_standin and "openai" not in urls:
        # The drills' stand-in on this API host (tasks/standin.py).
        urls["openai"] = "http://127.0.0.1:8080/v1"
    return urls


def secrets() -> dict[str, str]:
    """DB_PASSWORD and the API keys of the allowed real providers."""
    wanted = ["DB_PASSWORD"] + [
        f"{p.upper()}_API_KEY"
        for p in host.data.llm_allowed_providers
        if p in artifact().real_providers
    ]
    return {key: required_secret(key) for key in wanted}


def outage_instances() -> int:
    """API instances that may admit calls at once (two per host during a release)."""
    return 2 * len(topology.hosts_with("api"))


def _context() -> dict[str, object]:
    db_host = topology.the("db")
    return {
        "db": topology.has("db"),
        "api": topology.has("api"),
        "secrets": secrets(),
        "real_providers": artifact().real_providers,
        "base_urls": base_urls(),
        "prices_file": PRICES_IN_CONTAINER if host.data.llm_prices else "",
        "outage_instances": outage_instances(),
        "db_address": topology.address_from(db_host),
    }


def check() -> None:
    check_data(DATA)
    known = artifact().known_providers
    allowed = host.data.llm_allowed_providers
    unknown = sorted(set(allowed) - set(known))
    if unknown:
        raise fail(
            f"group data `llm_allowed_providers` names unknown provider(s) {unknown}; "
            f"known (artifact {artifact().version}): {list(known)}"
        )
    if host.data.llm_provider not in allowed:
        raise fail(
            f"group data `llm_provider` = {host.data.llm_provider!r} is not in "
            f"`llm_allowed_providers` = {allowed}"
        )
    for provider in host.data.llm_base_urls:
        if provider not in known:
            raise fail(f"group data `llm_base_urls` names unknown provider {provider!r}")
    if host.data.llm_standin and not host.data.disposable:
        raise fail("group data `llm_standin` = True is only allowed on a disposable host")
    if topology.has("api"):
        _check_with_the_release()


def _check_with_the_release() -> None:
    """Load the rendered environment with the artifact's own Settings (and price table)."""
    environment = {}
    for line in render("templates/env.j2", **_context()).splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            environment[key] = value
    with tempfile.TemporaryDirectory() as tmp:
        if host.data.llm_prices:
            prices = Path(tmp) / "prices.json"
            prices.write_text(json.dumps(host.data.llm_prices))
            environment["LLM_PRICES_FILE"] = str(prices)
        result = run_artifact(
            "from techno_os_api.core.config import load_settings\n"
            "from techno_os_api.llm.pricing import PriceTable\n"
            "settings = load_settings()\n"
            "PriceTable.load(settings.llm_prices_file)",
            environment,
        )
    if result.returncode != 0:
        message = result.stderr.strip().splitlines()
        for value in secrets().values():
            message = [line.replace(value, "<secret>") for line in message]
        raise fail(
            f"the API of release {artifact().version} refuses this environment:\n"
            + "\n".join(message[-12:])
        )


@deploy("Environment of the stack (.env: LLM hardening, keys, limits, database)")
def environment_file() -> list[OperationMeta]:
    """The .env, and the price overrides the API mounts; what changed triggers a release."""
    if not (topology.has("db") or topology.has("api")):
        return []
    changed = [
        files.template(
            name=f"Render {host.data.backend_dir}/.env (root, 0600)",
            src="templates/env.j2",
            dest=f"{host.data.backend_dir}/.env",
            user="root",
            group="root",
            mode="0600",
            **_context(),
        )
    ]
    if topology.has("api"):
        prices = f"{host.data.backend_dir}/llm-prices.json"
        if host.data.llm_prices:
            from io import StringIO

            changed.append(
                files.put(
                    name=f"Price overrides {prices} (group data llm_prices)",
                    src=StringIO(json.dumps(host.data.llm_prices, indent=2, sort_keys=True)),
                    dest=prices,
                    mode="0644",
                )
            )
        else:
            changed.append(
                files.file(name=f"No price overrides ({prices})", path=prices, present=False)
            )
    return changed
