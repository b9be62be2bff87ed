"""Secure exposure (runbook: https://api.verittadigital.com/health public, Prometheus and
Alertmanager behind authentication): the reverse proxy serves api., prometheus. and
alertmanager.<domain> over TLS 1.2+ with a certificate that verifies and is not about to expire,
redirects HTTP to HTTPS, sets the security headers, keeps the API's /metrics private, and is the
only public listener besides SSH.

Every request is made on the host itself, to its public address (the route to the outside), with
the proxy's names resolved there (`curl --resolve`), and verified for real: against the system's
trust store, or in the sandbox (`tls_mode` internal) against the root of Caddy's local CA.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from cryptography import x509

from ._support import HttpResponse, Target, is_loopback, parse_curl_include, secret

pytestmark = [pytest.mark.readonly, pytest.mark.role("edge")]

# Where Caddy keeps its local CA (tls_mode "internal"): the caddy user's home, Debian's package.
LOCAL_CA_ROOT = "/var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt"
SITES = ("api", "prometheus", "alertmanager")
MIN_DAYS_LEFT = 14
OPERATORS_ONLY = {"prometheus": "/-/healthy", "alertmanager": "/-/ready"}
# Spellings of the API's /metrics a client might try to slip past the proxy's rule.
METRICS_SPELLINGS = (
    "/metrics",
    "/metrics/",
    "/METRICS",
    "//metrics",
    "/%6detrics",
    "/a/../metrics",
)
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


# --- helpers ------------------------------------------------------------------------------------
def site(t: Target, name: str) -> str:
    return f"{name}.{t.data.get('public_domain', 'verittadigital.com')}"


def public_address(t: Target) -> str:
    """The host's address on its route to the outside world: what clients reach."""
    out = t.check("ip -4 -o route get 1.1.1.1")
    match = re.search(r"\bsrc (\S+)", out)
    assert match, f"no source address in `ip route get`: {out!r}"
    return match.group(1)


def ca_args(t: Target) -> list[str]:
    """curl/openssl trust: Caddy's local CA root in the sandbox, else the system trust store."""
    if t.data.get("tls_mode") == "internal":
        return ["--cacert", LOCAL_CA_ROOT]
    return []


def proxy_get(
    t: Target,
    name: str,
    path: str,
    *,
    scheme: str = "https",
    credentials: tuple[str, str] | None = None,
) -> HttpResponse:
    """GET through the proxy at the host's public address, TLS verified; status 0 on failure.
    Credentials never appear in a failure message (the command line is not shown)."""
    port = 443 if scheme == "https" else 80
    host = site(t, name)
    args: list[str] = ["--resolve", f"{host}:{port}:{public_address(t)}", *ca_args(t)]
    if credentials:
        args += ["-u", f"{credentials[0]}:{credentials[1]}"]
    command = "curl -sS -i -m 10 --path-as-is" + " %s" * (len(args) + 1)
    result = t.run(command, *args, f"{scheme}://{host}{path}")
    if result.rc != 0:
        return HttpResponse(0, {}, f"curl exit {result.rc}: {result.stderr.strip()[:300]}")
    return parse_curl_include(result.stdout)


def s_client(t: Target, name: str, *options: str) -> str:
    """openssl s_client's whole output for a handshake with the proxy as `name`."""
    trust = ["-CAfile", LOCAL_CA_ROOT] if t.data.get("tls_mode") == "internal" else []
    args = ["-connect", f"{public_address(t)}:443", "-servername", site(t, name)]
    args += ["-verify_hostname", site(t, name), "-verify_return_error", *trust, *options]
    result = t.run("openssl s_client" + " %s" * len(args) + " </dev/null 2>&1", *args)
    return result.stdout


def operator_credentials(t: Target) -> tuple[str, str] | None:
    """The proxy's user and password: $PROXY_BASIC_AUTH_PASSWORD, else the secrets file the deploy
    wrote (disposable hosts). None when this machine does not know it."""
    user = str(t.data.get("proxy_basic_auth_user", "ops"))
    password = secret(t.data, t.groups, "PROXY_BASIC_AUTH_PASSWORD")
    return (user, password) if password else None


def public_listeners(t: Target) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket on a non-loopback address (`ss -ltn`)."""
    out = []
    for line in t.check("ss -ltnH").splitlines():
        local = line.split()[3]
        address, _, port = local.rpartition(":")
        address = address.strip("[]").split("%")[0]
        if address in ("*", "0.0.0.0", "::") or not is_loopback(address):
            out.append((address, int(port)))
    return out


# --- TLS ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SITES)
def test_certificate_verifies_and_is_not_about_to_expire(target: Target, name: str) -> None:
    out = s_client(target, name, "-showcerts")
    assert "Verify return code: 0 (ok)" in out, (
        f"{site(target, name)}: the certificate does not verify: "
        f"{[line for line in out.splitlines() if 'verify' in line.lower()][:5]}"
    )
    pems = _PEM.findall(out)
    assert pems, f"{site(target, name)}: no certificate in the handshake"
    cert = x509.load_pem_x509_certificate(pems[0].encode())
    now = datetime.fromtimestamp(int(target.check("date +%s")), UTC)
    left = cert.not_valid_after_utc - now
    if target.data.get("tls_mode") == "internal":
        # Caddy's local CA issues 12-hour certificates (its intermediate lives 7 days) and renews
        # them when a third of their life is left: one with less than a sixth left was not renewed.
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert left > lifetime / 6, (
            f"{site(target, name)}: {left} left of a {lifetime} local certificate: not renewed"
        )
    else:
        assert left.days >= MIN_DAYS_LEFT, (
            f"{site(target, name)}: the certificate expires in {left} "
            f"(on {cert.not_valid_after_utc:%Y-%m-%d}), under {MIN_DAYS_LEFT} days"
        )


def test_tls_below_1_2_is_refused_by_the_proxy(target: Target) -> None:
    # The client is allowed TLS 1.1 (security level 0), so a failure is the server's refusal.
    old = s_client(target, "api", "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert "alert protocol version" in old and "Cipher is (NONE)" in old, (
        f"TLS 1.1 was not refused with a protocol_version alert: {old[-600:]}"
    )
    for version in ("-tls1_2", "-tls1_3"):
        modern = s_client(target, "api", version)
        assert "Cipher is (NONE)" not in modern and "Verify return code: 0 (ok)" in modern, (
            f"{version} handshake failed: {modern[-600:]}"
        )


# --- HTTP --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SITES)
def test_http_redirects_to_https(target: Target, name: str) -> None:
    response = proxy_get(target, name, "/health", scheme="http")
    assert response.status in (301, 308), f"http://{site(target, name)}/health: {response.status}"
    assert response.headers.get("location") == f"https://{site(target, name)}/health"


def test_api_health_is_public_through_the_proxy(target: Target) -> None:
    response = proxy_get(target, "api", "/health")
    assert response.status == 200, f"https://{site(target, 'api')}/health: {response}"
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("path", METRICS_SPELLINGS)
def test_api_metrics_is_not_public(target: Target, path: str) -> None:
    response = proxy_get(target, "api", path)
    assert response.status in (403, 404), f"https://{site(target, 'api')}{path}: {response.status}"
    assert "llm_" not in response.body, f"{path} leaked the API's metrics"


def test_security_headers_are_set(target: Target) -> None:
    headers = proxy_get(target, "api", "/health").headers
    hsts = headers.get("strict-transport-security", "")
    match = re.search(r"max-age=(\d+)", hsts)
    assert match and int(match.group(1)) >= 180 * 86400, f"HSTS: {hsts!r}"
    assert headers.get("x-content-type-options") == "nosniff"
    assert headers.get("x-frame-options", "").upper() in ("DENY", "SAMEORIGIN")
    assert headers.get("referrer-policy"), "no Referrer-Policy"
    assert "server" not in headers, f"Server header: {headers.get('server')!r}"


# --- authentication ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(OPERATORS_ONLY))
def test_operators_only_site_refuses_unauthenticated_requests(target: Target, name: str) -> None:
    path = OPERATORS_ONLY[name]
    anonymous = proxy_get(target, name, path)
    assert anonymous.status == 401, f"{site(target, name)}{path} without credentials: {anonymous}"
    assert anonymous.headers.get("www-authenticate", "").startswith("Basic")
    user = str(target.data.get("proxy_basic_auth_user", "ops"))
    wrong = proxy_get(target, name, path, credentials=(user, "not-the-password"))
    assert wrong.status == 401, f"{site(target, name)}{path} with a wrong password: {wrong.status}"


@pytest.mark.parametrize("name", sorted(OPERATORS_ONLY))
def test_operators_only_site_answers_the_operators_credentials(target: Target, name: str) -> None:
    credentials = operator_credentials(target)
    if credentials is None:
        pytest.skip("the proxy password is not known here: set PROXY_BASIC_AUTH_PASSWORD")
    path = OPERATORS_ONLY[name]
    response = proxy_get(target, name, path, credentials=credentials)
    assert response.status == 200, f"{site(target, name)}{path} with credentials: {response.status}"
    expected = "Prometheus Server is Healthy." if name == "prometheus" else "OK"
    assert response.body.strip() == expected


# --- keys: nothing new is public --------------------------------------------------------------
@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/chat/completions"),
                                              ("GET", "/preferences/x"),
                                              ("GET", "/llm/providers")])  # fmt: skip
def test_anonymous_api_calls_are_refused_through_the_proxy(
    target: Target, method: str, path: str
) -> None:
    host = site(target, "api")
    args = ["--resolve", f"{host}:443:{public_address(target)}", *ca_args(target)]
    if method == "POST":
        body = '{"model": "fake/echo", "messages": [{"role": "user", "content": "x"}]}'
        args += ["-H", "Content-Type: application/json", "--data-binary", body]
    result = target.run(
        "curl -sS -i -m 10 -X %s" + " %s" * (len(args) + 1), method, *args, f"https://{host}{path}"
    )
    response = parse_curl_include(result.stdout)
    assert response.status == 401, f"anonymous {method} {path} through the proxy: {response}"
    assert response.json()["error"]["type"] == "invalid_api_key"


def test_docs_and_schema_are_not_served(target: Target) -> None:
    for path in ("/docs", "/redoc", "/openapi.json"):
        response = proxy_get(target, "api", path)
        assert response.status == 404, f"https://{site(target, 'api')}{path}: {response.status}"


def test_a_body_over_the_limit_is_refused_by_the_proxy(target: Target) -> None:
    host = site(target, "api")
    size = 9 * 1024 * 1024  # over proxy_max_body_size (8MB)
    args = ["--resolve", f"{host}:443:{public_address(target)}", *ca_args(target)]
    result = target.run(
        "head -c %s /dev/zero | curl -sS -i -m 20 -X POST -H 'Content-Type: application/json' "
        "--data-binary @-" + " %s" * (len(args) + 1),
        size, *args, f"https://{host}/v1/chat/completions",
    )  # fmt: skip
    assert parse_curl_include(result.stdout).status == 413, result.stdout[:300]


def test_caddy_is_enabled_and_running_with_a_valid_config(target: Target) -> None:
    service = target.host.service("caddy")
    assert service.is_enabled and service.is_running, "caddy.service is not enabled and running"
    result = target.run(
        "runuser -u caddy -- env HOME=/var/lib/caddy "
        "caddy validate --config /etc/caddy/Caddyfile --adapter caddyfile"
    )
    assert result.rc == 0, f"caddy validate: {(result.stdout + result.stderr).strip()[-800:]}"
