"""Production. Keys come from the operator's environment or secrets/prod.env (untracked)."""

llm_allowed_providers = ["fake", "openai"]
llm_provider = "fake"
