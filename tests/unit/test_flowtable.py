from __future__ import annotations

from gwlb_agent.flowtable import FlowRecordBuilder, FlowTable, Timeouts, reverse_key
from gwlb_fleet.sls.flowrecord import FlowRecord


def make_table(records: list[FlowRecord], clock: list[float]) -> FlowTable:
    build = FlowRecordBuilder("nva-1")
    return FlowTable(
        lambda end: records.append(build(end)),
        Timeouts(export_interval=1e9),
        clock=lambda: clock[0],
        wall_clock=lambda: clock[0],
    )


def test_keys_are_the_two_directions() -> None:
    fwd = bytes([1, 1, 1, 1, 2, 2, 2, 2, 0, 10, 0, 20])
    assert reverse_key(fwd) == bytes([2, 2, 2, 2, 1, 1, 1, 1, 0, 20, 0, 10])
    assert reverse_key(reverse_key(fwd)) == fwd


def test_expiry_is_worked_off_within_a_budget() -> None:
    records: list[FlowRecord] = []
    clock = [100.0]
    table = make_table(records, clock)
    for i in range(50_000):
        fwd = i.to_bytes(4, "big") + b"\x0a\x00\x00\x01\x00\x01\x00\x02"
        table.add(17, fwd, reverse_key(fwd), clock[0])
    clock[0] += 121
    examined = table.expire(clock[0], budget=1000)
    assert examined == 1000 and len(records) == 1000 and table.count == 49_000
    while table.expire(clock[0], budget=1000):
        pass
    assert table.count == 0 and len(records) == 50_000
    assert not table.by_protocol[17]
    assert sum(len(b) for b in table._wheel.values()) == 0


def test_active_flows_are_rescheduled_not_expired() -> None:
    records: list[FlowRecord] = []
    clock = [0.0]
    table = make_table(records, clock)
    fwd = b"\x01\x01\x01\x01\x02\x02\x02\x02\x00\x01\x00\x02"
    flow = table.add(6, fwd, reverse_key(fwd), 0.0)
    assert flow is not None
    for second in range(1, 1000):
        clock[0] = float(second)
        flow.last_seen = clock[0]
        table.expire(clock[0])
    assert records == [] and table.count == 1
    # The wheel holds one live entry for the flow, not one per reschedule.
    assert sum(len(b) for b in table._wheel.values()) <= 2
    clock[0] += 351
    table.expire(clock[0])
    assert [r.reason for r in records] == ["idle"]


def test_records_of_icmp_flows_carry_type_and_code_and_no_ports() -> None:
    records: list[FlowRecord] = []
    clock = [0.0]
    table = make_table(records, clock)
    echo_key = b"\x01\x01\x01\x01\x02\x02\x02\x02\x12\x34\x12\x34"  # the echo id, twice
    flow = table.add(1, echo_key, reverse_key(echo_key), 0.0)
    assert flow is not None
    flow.icmp_type_code = (8 << 8) | 0
    udp_key = b"\x01\x01\x01\x01\x02\x02\x02\x02\x9c\x40\x00\x35"
    assert table.add(17, udp_key, reverse_key(udp_key), 0.0) is not None
    table.flush_all()
    by_protocol = {r.protocol: r for r in records}
    icmp, udp = by_protocol[1], by_protocol[17]
    assert (icmp.icmp_type, icmp.icmp_code, icmp.src_port, icmp.dst_port) == (8, 0, 0, 0)
    assert (udp.icmp_type, udp.icmp_code, udp.src_port, udp.dst_port) == (None, None, 40000, 53)
