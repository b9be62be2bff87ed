"""The sandbox host (local VM): disposable, with the drills' provider stand-in."""

disposable = True
llm_standin = True
# `openai` is served by the stand-in on the compose network, so drills exercise a real provider
# path (HTTP, breaker, timeout) without leaving the machine.
llm_allowed_providers = ["fake", "openai"]
llm_base_urls = {"openai": "http://techno-os-llm-standin:8080/v1"}
