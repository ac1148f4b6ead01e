"""The agent's counters and their Prometheus text rendering.

The packet loop adds to plain ints once per batch; readers (the health server, the metrics
publisher) take a snapshot. Under the GIL an int read is atomic, and a snapshot a few packets
stale is fine for a counter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gwlb_agent.drops import DROP_NAMES


@dataclass
class DataPlaneCounters:
    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    batches: int = 0


@dataclass(frozen=True)
class Snapshot:
    packets_in: int
    packets_out: int
    bytes_in: int
    bytes_out: int
    drops: dict[str, int]
    flows_active: int
    flows_created: int
    records_emitted: int
    records_exported: int
    records_dropped: int
    sink_errors: int
    policy_generation: int
    policy_reloads_failed: int
    healthy: bool
    draining: bool
    health_reason: str
    flows_picked_up: int = 0
    extra: dict[str, float] = field(default_factory=dict)


def render_prometheus(snapshot: Snapshot) -> str:
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP gwlb_agent_{name} {help_text}")
        lines.append(f"# TYPE gwlb_agent_{name} {kind}")
        for labels, value in samples:
            lines.append(f"gwlb_agent_{name}{labels} {value}")

    s = snapshot
    metric("packets_in_total", "counter", "Geneve datagrams received.", [("", s.packets_in)])
    metric("packets_out_total", "counter", "Datagrams returned to the GWLB.", [("", s.packets_out)])
    metric("bytes_in_total", "counter", "Geneve payload bytes received.", [("", s.bytes_in)])
    metric("bytes_out_total", "counter", "Geneve payload bytes returned.", [("", s.bytes_out)])
    metric(
        "drops_total",
        "counter",
        "Datagrams not returned, by reason.",
        [(f'{{reason="{name}"}}', s.drops.get(name, 0)) for name in DROP_NAMES],
    )
    metric("flows_active", "gauge", "Flows in the flow table.", [("", s.flows_active)])
    metric("flows_created_total", "counter", "Flows created.", [("", s.flows_created)])
    metric(
        "flows_picked_up_total",
        "counter",
        "TCP flows first seen mid-stream, allowed as the reply of a connection opened elsewhere.",
        [("", s.flows_picked_up)],
    )
    metric("flow_records_emitted_total", "counter", "Flow records produced.", [("", s.records_emitted)])
    metric(
        "flow_records_exported_total",
        "counter",
        "Flow records written to the sink.",
        [("", s.records_exported)],
    )
    metric(
        "flow_records_dropped_total",
        "counter",
        "Flow records lost to a full hand-off queue.",
        [("", s.records_dropped)],
    )
    metric("flow_sink_errors_total", "counter", "Failed writes to the flow sink.", [("", s.sink_errors)])
    metric(
        "policy_generation", "gauge", "Policy loads since start (1 = initial).", [("", s.policy_generation)]
    )
    metric(
        "policy_reload_failures_total", "counter", "Policy reloads refused.", [("", s.policy_reloads_failed)]
    )
    metric("healthy", "gauge", "1 while the health check passes.", [("", int(s.healthy))])
    metric("draining", "gauge", "1 while draining.", [("", int(s.draining))])
    for name, value in sorted(s.extra.items()):
        kind = "counter" if name.endswith("_total") else "gauge"
        metric(name, kind, name.replace("_", " ") + ".", [("", value)])
    return "\n".join(lines) + "\n"
