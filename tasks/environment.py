"""The `.env` of the database and API hosts (root, 0600): the compose project's variables on the
database host, the API's whole environment on API hosts (one file when a host holds both).

The API's part is checked by the release's own settings class (the artifact's wheel, not the
source tree), with exactly the values the container will get: a value the app would refuse at
start-up stops the deploy before any change instead. That is where the fallback chains
(`llm_fallbacks`) are checked against the allowlist and the keys, by the API's own rules; the
release must also read back the chains and the stream idle timeout as deployed (a release that
predates them would ignore them silently).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files

from tasks import standin, topology
from tasks.common import (
    DataRules,
    artifact,
    check_data,
    duration_seconds,
    fail,
    render,
    required_secret,
    run_artifact,
)

# Where the API container finds the price overrides (mounted read-only by techno-os-release).
PRICES_IN_CONTAINER = "/etc/techno-os/llm-prices.json"
# Variables of the .env named in the API's start-up errors, and the group data they come from.
FROM_GROUP_DATA = {
    "VERITTA_LLM_ALLOWED_PROVIDERS": "llm_allowed_providers",
    "LLM_PROVIDER": "llm_provider",
    "LLM_FALLBACKS": "llm_fallbacks",
    "LLM_STREAM_IDLE_TIMEOUT_SECONDS": "llm_stream_idle_timeout_seconds",
}
# LLM_FALLBACKS' own separators (`a=b/m,c/m;d=...`), which no name or model may contain.
_FALLBACK_SEPARATORS = set(";,= \t\n\"'$`\\")


def _is_chains(value: dict) -> bool:
    """provider -> a non-empty list of `provider/model`, with nothing that breaks the format."""
    names = [*value, *(t for targets in value.values() for t in targets)]
    return all(
        isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets)
        for targets in value.values()
    ) and all(isinstance(n, str) and n and not _FALLBACK_SEPARATORS & set(n) for n in names)


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
    "llm_fallbacks": (
        dict,
        _is_chains,
        'provider -> a list of "provider/model" alternatives (no spaces, ";", "," or "=")',
    ),
    "llm_stream_idle_timeout_seconds": (
        (int, float),
        lambda v: 0 < v <= 600,
        "a number of seconds, above 0 and at most 600",
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
    """Group data `llm_base_urls`, over the drills' stand-in on this API host (sandbox only,
    tasks/standin.py) for the providers it plays."""
    return {**standin.base_urls(), **host.data.llm_base_urls}


def secrets() -> dict[str, str]:
    """DB_PASSWORD and the API keys of the allowed real providers (dummy ones, generated, for
    the providers the sandbox's stand-in plays)."""
    real = [p for p in host.data.llm_allowed_providers if p in artifact().real_providers]
    standin.dummy_keys(real)
    wanted = ["DB_PASSWORD"] + [f"{p.upper()}_API_KEY" for p in real]
    return {key: required_secret(key) for key in wanted}


def fallbacks() -> str:
    """Group data `llm_fallbacks` as LLM_FALLBACKS: `openai=anthropic/m,google/m;xai=...`."""
    return ";".join(
        f"{source}={','.join(targets)}" for source, targets in host.data.llm_fallbacks.items()
    )


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
        "fallbacks": fallbacks(),
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
    idle = host.data.llm_stream_idle_timeout_seconds
    if idle >= duration_seconds(host.data.balancer_idle_timeout):
        raise fail(
            f"group data `llm_stream_idle_timeout_seconds` = {idle} must be shorter than "
            f"`balancer_idle_timeout` = {host.data.balancer_idle_timeout}: HAProxy would cut "
            "a stream that the API still waits for"
        )
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
            "import json\n"
            "from techno_os_api.core.config import load_settings\n"
            "from techno_os_api.llm.pricing import PriceTable\n"
            "settings = load_settings()\n"
            "PriceTable.load(settings.llm_prices_file)\n"
            "print(json.dumps({'fallbacks': getattr(settings, 'llm_fallbacks', None), "
            "'idle': getattr(settings, 'llm_stream_idle_timeout_seconds', None)}))",
            environment,
        )
    if result.returncode != 0:
        message = result.stderr.strip().splitlines()
        for value in secrets().values():
            message = [line.replace(value, "<secret>") for line in message]
        hints = [
            f"  ({variable} comes from group data `{name}`)"
            for variable, name in FROM_GROUP_DATA.items()
            if any(variable in line for line in message)
        ]
        raise fail(
            f"the API of release {artifact().version} refuses this environment:\n"
            + "\n".join(message[-12:] + hints)
        )
    _check_read_back(json.loads(result.stdout.strip().splitlines()[-1]))


def _check_read_back(read: dict) -> None:
    """The release reads the fallback chains and the stream idle timeout as group data says. A
    release older than them has neither setting (None): its fallbacks would silently never
    happen, so chains stop the deploy; the idle timeout alone is harmless there (no streams)."""
    wanted = {k.lower(): list(v) for k, v in host.data.llm_fallbacks.items()}
    if wanted and read["fallbacks"] != wanted:
        raise fail(
            f"release {artifact().version} reads LLM_FALLBACKS as {read['fallbacks']!r}, not as "
            f"group data `llm_fallbacks` = {wanted!r}: it does not support fallbacks"
        )
    idle = read["idle"]
    if idle is not None and float(idle) != float(host.data.llm_stream_idle_timeout_seconds):
        raise fail(
            f"release {artifact().version} reads LLM_STREAM_IDLE_TIMEOUT_SECONDS as {idle}, "
            f"not {host.data.llm_stream_idle_timeout_seconds} (group data)"
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
