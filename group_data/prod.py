"""Production. Keys come from the operator's environment or secrets/prod.env (untracked)."""

llm_allowed_providers = ["fake", "openai"]
llm_provider = "fake"

# Public names with Let's Encrypt certificates (DNS of api., prometheus. and alertmanager. point
# here, ports 80 and 443 open). Alert receiver: the secret ALERT_WEBHOOK_URL in the operator's
# environment or secrets/prod.env (or alert_webhook_url / alert_email_to here).
public_domain = "verittadigital.com"
tls_mode = "acme"
