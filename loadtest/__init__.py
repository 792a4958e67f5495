"""Client-side load tests of the prediction service, for scripts/benchmark_serving.py.

Runs outside the service (raw asyncio HTTP clients, process-tree measurements) and
imports none of `serving`, `stages` or `monitoring` (import-linter keeps it so): it talks
to the service over HTTP only, so it measures what a client would see. Not in the image.

- `payloads`: the requests, pre-built as bytes (good photos, issue-9 triggers, tensors).
- `clients`: keep-alive clients that send them for a while and tally the answers.
- `processes`: free ports, starting and stopping a server, its CPU time and memory.
"""
