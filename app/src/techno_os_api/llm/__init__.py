"""The LLM gateway core: provider adapters, circuit breakers, metrics, and the gateway that
orchestrates them. Nothing in this package imports the web framework."""
