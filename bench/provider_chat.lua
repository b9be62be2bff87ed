-- wrk script for bench_http_clients.py: an OpenAI chat completion routed to the `openai` provider,
-- which the benchmark points at its nginx stand-in (the client apps ignore the model).
wrk.method = "POST"
wrk.body = '{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"hello from the benchmark"}]}'
wrk.headers["Content-Type"] = "application/json"
