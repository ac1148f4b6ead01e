"""gwlb_fleet.panos.panlogs: PAN-OS syslog lines of two versions and our HTTP payload, parsed and
mapped to flow and threat records; malformed, truncated, reordered and oversized logs refused with
the field (by PAN-OS's name) and the line."""

from __future__ import annotations

import json
from string import Template

import pytest

from gwlb_fleet.panos import panlogs
from gwlb_fleet.panos.panlogs import HTTP_PAYLOADS, INTAKE_PATH, MIN_FIELDS, PanLogError, parse_body
from gwlb_fleet.sls import loggroup
from gwlb_fleet.sls.flowrecord import LOG_KEY_TYPES, FlowRecord, ThreatRecord
from gwlb_fleet.sls.queries import BLOCKING_THREAT_ACTIONS
from tests.panlog_lines import VERSIONS, fields, line

NOW = 1_796_400_000.0
COUNTS = ("packets_fwd", "bytes_fwd", "packets_rev", "bytes_rev")
# No header, a BSD syslog header, an RFC 5424 one, and one whose structured data holds a comma and
# quotes (taken as fields if the header were not stripped).
HEADERS = [
    "",
    "<14>Dec  4 10:00:05 fw1 ",
    "<14>1 2026-12-04T10:00:05Z fw1 - - - - ",
    '<14>1 2026-12-04T10:00:05Z fw1 - - [origin software="PAN-OS, 11.1"] ',
]


def one(text: str, content_type: str = "text/plain") -> FlowRecord | ThreatRecord:
    records = parse_body(text, content_type, NOW)
    assert len(records) == 1
    return records[0]


def refused(text: str, content_type: str = "text/plain") -> PanLogError:
    with pytest.raises(PanLogError) as error:
        parse_body(text, content_type, NOW)
    return error.value


# --- the documented formats ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("header", HEADERS, ids=["bare", "bsd-syslog", "rfc5424", "rfc5424-sd"])
def test_a_traffic_log_maps_to_a_flow_record(version: str, header: str) -> None:
    record = one(line("traffic", version, header=header))
    assert isinstance(record, FlowRecord)
    assert record.record_id == "007951000123456-traffic-7001"
    assert (record.appliance_id, record.serial, record.sequence_number) == ("007951000123456",) * 2 + (7001,)
    assert record.start == 1_796_378_398.0  # 2026/12/04 09:59:58 UTC
    assert record.end == record.start + 7
    assert record.emitted == NOW
    assert (record.protocol, record.src_ip, record.src_port, record.dst_ip, record.dst_port) == (
        6,
        "10.1.0.5",
        51514,
        "192.0.2.10",
        443,
    )
    assert (record.packets_fwd, record.bytes_fwd, record.packets_rev, record.bytes_rev) == (6, 1200, 8, 3920)
    assert (record.action, record.rule, record.application) == ("allow", "gwlb-allow-web", "ssl")
    assert (record.reason, record.session_end_reason) == ("fin", "tcp-fin")
    assert record.flow_id == "007951000123456-33211-1796378398"


@pytest.mark.parametrize("version", VERSIONS)
def test_a_threat_log_maps_to_a_threat_record(version: str) -> None:
    record = one(line("threat", version, header="<14>Dec  4 10:00:05 fw1 "))
    assert isinstance(record, ThreatRecord)
    assert record.record_id == "007951000123456-threat-7002"
    assert (record.threat_id, record.threat_name) == (39040, "Eicar Test File")
    assert (record.threat_category, record.severity, record.threat_direction) == (
        "virus",
        "medium",
        "server-to-client",
    )
    assert (record.action, record.session_id, record.time) == ("reset-both", 33212, 1_796_378_405.0)
    assert (record.src_port, record.dst_port) == (80, 51515)


def test_the_two_versions_differ_only_in_appended_fields() -> None:
    for kind in ("traffic", "threat"):
        old, new = fields(kind, "10.1"), fields(kind, "11.1")
        assert len(new) > len(old) >= MIN_FIELDS[kind]  # type: ignore[index]
        assert one(line(kind, "10.1")) == one(line(kind, "11.1"))


def test_a_quoted_field_with_commas_stays_one_field() -> None:
    record = one(line("threat", "11.1", URL_Filename='a,b,"c",d', Rule_Name="rule, with comma"))
    assert isinstance(record, ThreatRecord)
    assert record.rule == "rule, with comma"
    assert record.threat_id == 39040


@pytest.mark.parametrize(
    ("action", "expected"), [("allow", "allow"), ("deny", "deny"), ("drop", "deny"), ("reset-both", "deny")]
)
def test_the_traffic_action_is_allow_or_deny(action: str, expected: str) -> None:
    record = one(line("traffic", "10.1", Action=action, Session_End_Reason="policy-deny"))
    assert isinstance(record, FlowRecord)
    assert record.action == expected


@pytest.mark.parametrize(
    ("subtype", "end_reason", "reason"),
    [
        ("end", "tcp-rst-from-client", "rst"),
        ("end", "aged-out", "idle"),
        ("start", "n/a", "interval"),
        ("deny", "policy-deny", "other"),
        ("end", "threat", "other"),
    ],
)
def test_end_reasons(subtype: str, end_reason: str, reason: str) -> None:
    record = one(line("traffic", "10.1", Threat_Content_Type=subtype, Session_End_Reason=end_reason))
    assert isinstance(record, FlowRecord)
    assert (record.reason, record.session_end_reason) == (reason, end_reason)


@pytest.mark.parametrize("proto", ["icmp", "ipv6-icmp"])
def test_icmp_has_no_ports_and_no_invented_type_or_code(proto: str) -> None:
    record = one(line("traffic", "11.1", Protocol=proto, Source_Port="1234", Destination_Port="0"))
    assert isinstance(record, FlowRecord)
    assert (record.src_port, record.dst_port, record.icmp_type, record.icmp_code) == (0, 0, None, None)


def test_ipv6_addresses_and_a_numeric_protocol() -> None:
    record = one(line("traffic", "11.1", Source_Address="2001:db8::5", Protocol="47"))
    assert isinstance(record, FlowRecord)
    assert (record.src_ip, record.protocol) == ("2001:db8::5", 47)


def test_a_url_log_without_a_threat_name() -> None:
    record = one(
        line("threat", "10.1", Threat_ID="(9999)", Threat_Content_Type="url", Severity="informational")
    )
    assert isinstance(record, ThreatRecord)
    assert (record.threat_name, record.threat_id, record.threat_category) == ("", 9999, "url")


def test_a_resent_log_is_the_same_record() -> None:
    first = one(line("traffic", "10.1"))
    again = parse_body(line("traffic", "10.1"), "text/plain", NOW + 60)[0]
    assert again.record_id == first.record_id


def test_several_lines_blank_lines_skipped() -> None:
    body = "\n".join([line("traffic", "10.1"), "", line("threat", "11.1", Sequence_Number="9"), ""])
    records = parse_body(body, "text/csv", NOW)
    assert [r.record_id for r in records] == ["007951000123456-traffic-7001", "007951000123456-threat-9"]


def test_records_encode_with_keys_the_logstore_indexes() -> None:
    for record in (one(line("traffic", "10.1")), one(line("threat", "10.1"))):
        keys = {key for key, _ in record.log_contents()}
        assert keys <= set(LOG_KEY_TYPES), keys - set(LOG_KEY_TYPES)
        assert loggroup.encode_log(record.log_time(), record.log_contents())


# --- refused: truncated, malformed, reordered, oversized ----------------------------------------------------


@pytest.mark.parametrize("kind", ["traffic", "threat"])
def test_a_truncated_line_names_what_is_missing(kind: str) -> None:
    cut = ",".join(fields(kind, "10.1")[: MIN_FIELDS[kind] - 2])  # type: ignore[index]
    error = refused("\n" + cut)
    assert error.line == 2
    assert "missing" in str(error) and "line 2" in str(error)
    last = "Session End Reason" if kind == "traffic" else "Sequence Number"
    assert last in str(error)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"Source_Address": "10.1.0.500"}, "Source Address"),
        ({"Destination_Address": "web-server"}, "Destination Address"),
        ({"Source_Port": "65536"}, "Source Port"),
        ({"Destination_Port": "-1"}, "Destination Port"),
        ({"Bytes_Sent": "12k"}, "Bytes Sent"),
        ({"Start_Time": "2026-12-04T09:59:58"}, "Start Time"),
        ({"Start_Time": "2026/02/30 09:59:58"}, "Start Time"),
        ({"Sequence_Number": "\uff17\uff10\uff10\uff11"}, "Sequence Number"),  # fullwidth "7001"
        ({"Protocol": "quic"}, "IP Protocol"),
        ({"Serial_Number": ""}, "Serial Number"),
        ({"Type": "SYSTEM"}, "Type"),
    ],
)
def test_a_bad_field_is_named_with_its_value_and_line(change: dict[str, str], field: str) -> None:
    error = refused(line("traffic", "11.1") + "\n" + line("traffic", "11.1", **change))
    assert (error.field, error.line) == (field, 2)
    (value,) = change.values()
    assert repr(value[:20])[:-1] in str(error) or not value


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"Threat_ID": "Eicar Test File"}, "Threat/Content Name"),
        ({"Severity": "severe"}, "Severity"),
        ({"Generated_Time": "yesterday"}, "Generated Time"),
    ],
)
def test_a_bad_threat_field_is_named(change: dict[str, str], field: str) -> None:
    assert refused(line("threat", "10.1", **change)).field == field


def test_a_reordered_custom_format_is_refused_not_mis_mapped() -> None:
    """A custom format with the addresses and ports swapped, or the times moved: the type check
    of the field in the expected place fails."""
    values = fields("traffic", "10.1")
    swapped = list(values)
    swapped[7], swapped[24] = values[24], values[7]  # Source Address <-> Source Port
    assert refused(",".join(swapped)).field in {"Source Address", "Source Port"}
    moved = list(values)
    moved[35], moved[36] = values[36], values[35]  # Start Time <-> Elapsed Time
    assert refused(",".join(moved)).field in {"Start Time", "Elapsed Time"}
    shifted = values[:12] + values[13:] + [""]  # a field left out in the middle, one appended
    assert refused(",".join(shifted)).field  # the first field whose type is wrong, whichever it is


def test_a_line_that_is_not_a_pan_os_log() -> None:
    error = refused("<14>Dec  4 10:00:05 fw1 sshd[42]: session opened")
    assert (error.field, error.line) == ("Receive Time", 1)


def test_an_unterminated_quote_fails_its_own_line() -> None:
    text = line("traffic", "10.1", Rule_Name="x").replace(",x,", ',"x,', 1)
    error = refused(text + "\n" + line("traffic", "10.1"))
    assert error.line == 1 and "CSV" in str(error)


def test_an_oversized_line_is_refused_with_its_line() -> None:
    huge = line("threat", "11.1", URL_Filename="a" * (panlogs.MAX_LINE_BYTES + 1))
    error = refused(line("threat", "10.1") + "\n" + huge)
    assert error.line == 2 and "more than" in str(error)


# --- our HTTP payload ---------------------------------------------------------------------------------------


def payload(kind: str, version: str = "11.1", **changes: str) -> str:
    """What PAN-OS sends for our HTTP_PAYLOADS template: each $variable replaced by the field."""
    values = fields(kind, version, **changes)
    by_variable = {
        variable: values[position]
        for variable, position in panlogs.POSITIONS[kind].items()  # type: ignore[index]
        if variable != "subtype_category"
    }
    return Template(HTTP_PAYLOADS[kind]).substitute(by_variable)


def test_the_names_setup_imports_are_there() -> None:
    assert INTAKE_PATH.startswith("/")
    assert set(HTTP_PAYLOADS) == {"traffic", "threat"}
    for template in HTTP_PAYLOADS.values():
        keys = json.loads(template.replace('"$', '"'))
        assert all(keys[k] == k for k in keys), "each key holds the $variable of its own name"


@pytest.mark.parametrize("kind", ["traffic", "threat"])
def test_our_http_payload_maps_as_the_syslog_line_does(kind: str) -> None:
    assert one(payload(kind), "application/json") == one(line(kind, "11.1"))


def test_payloads_one_per_line_or_as_an_array() -> None:
    lines = payload("traffic") + "\n" + payload("threat")
    array = "[" + payload("traffic") + ",\n" + payload("threat") + "]"
    assert parse_body(lines, "application/json", NOW) == parse_body(array, "application/json", NOW)
    assert len(parse_body(lines, "", NOW)) == 2  # no content type: told by the first character


def test_invalid_json_is_refused_with_line_and_column() -> None:
    # A value PAN-OS did not escape (a quote in a name) breaks the JSON: refused, never guessed.
    broken = payload("traffic").replace("gwlb-allow-web", 'gwlb "web"')
    error = refused(payload("traffic") + "\n" + broken, "application/json")
    assert error.line == 2 and "column" in str(error)


def test_a_payload_field_missing_or_of_the_wrong_type() -> None:
    body = json.loads(payload("traffic"))
    del body["seqno"]
    assert refused(json.dumps(body), "application/json").field == "Sequence Number"
    body = json.loads(payload("threat"))
    body["src"] = "80"
    assert refused(json.dumps(body), "application/json").field == "Source Address"
    assert refused("[1]", "application/json").line == 1


# --- enumerated values: lower-case, as the audit queries match them ------------------------------------


def test_threat_enumerated_values_are_stored_lower_case() -> None:
    record = one(
        line(
            "threat",
            "11.1",
            Action="RESET-BOTH",
            Severity="High",
            Threat_Content_Type="Virus",
            Direction="Server-To-Client",
        )
    )
    assert isinstance(record, ThreatRecord)
    assert (record.action, record.severity, record.threat_category, record.threat_direction) == (
        "reset-both",
        "high",
        "virus",
        "server-to-client",
    )
    assert record.action in BLOCKING_THREAT_ACTIONS  # what the blocked-threat questions match


def test_an_undocumented_threat_action_is_kept_lower_cased_and_not_blocked() -> None:
    record = one(line("threat", "10.1", Action="Quarantine-Host"))
    assert isinstance(record, ThreatRecord)
    assert record.action == "quarantine-host"
    assert record.action not in BLOCKING_THREAT_ACTIONS


@pytest.mark.parametrize(
    ("action", "subtype", "expected"),
    [
        ("Allow", "END", "allow"),
        ("DENY", "deny", "deny"),
        ("reset both", "end", "deny"),  # as the documentation writes it
        ("Drop-ICMP", "drop", "deny"),
        ("allow", "drop", "deny"),  # refused before the application was identified
        ("allow", "deny", "deny"),
    ],
)
def test_traffic_action_and_subtype_whatever_their_case(action: str, subtype: str, expected: str) -> None:
    record = one(line("traffic", "11.1", Action=action, Threat_Content_Type=subtype))
    assert isinstance(record, FlowRecord)
    assert record.action == expected


@pytest.mark.parametrize(
    ("change", "field"),
    [({"Action": "quarantine"}, "Action"), ({"Threat_Content_Type": "update"}, "Threat/Content Type")],
)
def test_an_undocumented_traffic_action_or_subtype_is_refused(change: dict[str, str], field: str) -> None:
    error = refused(line("traffic", "10.1", **change))
    assert error.field == field
    assert "not one of" in str(error) and "line 1" in str(error)


# --- start and end logs: counts as deltas ----------------------------------------------------------------


def test_a_start_log_has_no_counts_and_the_end_log_carries_the_totals() -> None:
    start = line(
        "traffic",
        "11.1",
        Threat_Content_Type="start",
        Sequence_Number="7000",
        Elapsed_Time="0",
        Session_End_Reason="n/a",
        Bytes_Sent="300",
        Bytes_Received="900",
        Packets_Sent="2",
        Packets_Received="3",
    )
    end = line("traffic", "11.1")  # the same session's end log: totals 6/8 packets, 1200/3920 bytes
    records = parse_body(start + "\n" + end, "text/plain", NOW)
    assert all(isinstance(r, FlowRecord) for r in records)
    flows = [r for r in records if isinstance(r, FlowRecord)]
    assert len({r.flow_id for r in flows}) == 1 and len({r.record_id for r in flows}) == 2
    assert (flows[0].reason, flows[0].action) == ("interval", "allow")
    totals = tuple(sum(getattr(r, name) for r in flows) for name in COUNTS)
    assert totals == (6, 1200, 8, 3920)  # the end log's: the start log's counts not added again
