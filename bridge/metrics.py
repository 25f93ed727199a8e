"""Per-process Prometheus counters of the bridge (exported at /metrics)."""

from prometheus_client import Counter

frames_rejected = Counter("caisey_agent_frames_rejected_total", "Agent frames answered with an error frame", ["code"])
auth_failures = Counter("caisey_agent_auth_failures_total", "Refused agent handshakes", ["code"])
agent_connects = Counter("caisey_agent_connects_total", "Authenticated agent connections")
frames_over_rate = Counter("caisey_agent_frames_over_rate_total", "Agent sockets closed for sending frames too fast")
batches = Counter("caisey_agent_batches_total", "Transactions of the socket process's group commit (bridge/batcher.py)")
batched_units = Counter("caisey_agent_batched_units_total", "Socket frames and claims applied by the group commit")
