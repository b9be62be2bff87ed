-- wrk script for bench_gateway.py: an OpenAI chat completion for the in-process fake provider.
wrk.method = "POST"
wrk.body = '{"model":"fake/echo","messages":[{"role":"user","content":"hello from the benchmark"}]}'
wrk.headers["Content-Type"] = "application/json"
