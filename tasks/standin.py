"""Disposable API hosts: the drills' LLM provider stand-in (files/standin/, standard library
only) as a systemd service on 127.0.0.1:8080. It plays the providers of group data
`llm_standin_providers`, each in its own wire format: the API's base URL of each points at it,
and each gets a dummy API key generated into the sandbox's secrets file (the stand-in accepts
any key; a real key never goes to a sandbox). Never on a production host (checked by
tasks/environment.py)."""

import secrets as token

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, systemd

from tasks import topology
from tasks.common import append_secrets, fail, secret

DIRECTORY = "/opt/techno-os/standin"
UNIT = "/etc/systemd/system/techno-os-llm-standin.service"
LISTEN = ("127.0.0.1", 8080)
_ROOT = f"http://{LISTEN[0]}:{LISTEN[1]}"
# Each provider's base URL as its adapter appends its paths (app/src/techno_os_api/llm/providers):
# `/chat/completions` (OpenAI's format), `/v1/messages`, `/v1beta/models/M:generateContent`.
BASE_URLS = {
    "openai": f"{_ROOT}/v1",
    "xai": f"{_ROOT}/v1",
    "deepseek": _ROOT,
    "anthropic": _ROOT,
    "google": _ROOT,
}


def check() -> None:
    """The providers it plays are ones it speaks; only where it runs (tasks/environment.py)."""
    played = host.data.llm_standin_providers
    if not isinstance(played, list) or not set(played) <= set(BASE_URLS):
        raise fail(
            f"group data `llm_standin_providers` = {played!r} must be a list of {list(BASE_URLS)}"
        )


def base_urls() -> dict[str, str]:
    """The API's base URL of each provider the stand-in plays on this host ({} without it)."""
    if not host.data.llm_standin:
        return {}
    return {p: BASE_URLS[p] for p in host.data.llm_standin_providers}


def dummy_keys(providers: list[str]) -> None:
    """A dummy <PROVIDER>_API_KEY in the secrets file for each played provider that has none."""
    missing = {
        f"{p.upper()}_API_KEY": f"sk-sandbox-{token.token_hex(8)}"
        for p in providers
        if p in base_urls() and not secret(f"{p.upper()}_API_KEY")
    }
    if missing:
        append_secrets(missing, "Dummy keys for the providers the stand-in plays (the deploy).")


@deploy("LLM provider stand-in for the drills (sandbox only)")
def llm_standin() -> None:
    if not (topology.has("api") and host.data.llm_standin):
        return
    changed = [
        files.sync(
            name=f"Install the stand-in in {DIRECTORY}",
            src="files/standin/",
            dest=DIRECTORY,
            mode="0644",
            dir_mode="0755",
            delete=True,
            exclude=["__pycache__", "*.pyc"],
        ),
        files.template(
            name="Unit techno-os-llm-standin.service",
            src="templates/techno-os-llm-standin.service.j2",
            dest=UNIT,
            mode="0644",
            script=f"{DIRECTORY}/llm_standin.py",
            host_address=LISTEN[0],
            port=LISTEN[1],
        ),
    ]
    systemd.service(
        name="Keep the stand-in enabled and running; restart on new code",
        service="techno-os-llm-standin",
        running=True,
        enabled=True,
        daemon_reload=changed[1].will_change,
        restarted=any(op.will_change for op in changed),
    )
