"""The log forwarding configuration set-up writes in Panorama (gwlb_fleet.panos.xmlapi,
gwlb_fleet.deploy.panlogs): the xpaths and elements are the ones pan-os-python builds for the same
objects (F-PANLF-1..5), what PAN-OS would refuse is refused naming it, ``set`` merges (F-PANLF-6),
and the plan shows the token's secret, never a value."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from panos.device import HttpServer as SdkServer
from panos.device import HttpServerProfile as SdkProfile
from panos.device import HttpThreatHeader, HttpTrafficHeader, Vsys
from panos.objects import LogForwardingProfile, LogForwardingProfileMatchList
from panos.panorama import DeviceGroup, Panorama, PanoramaCommitAll, Template
from panos.policies import PreRulebase, SecurityRule

from gwlb_fleet.deploy import panlogs, plan
from gwlb_fleet.errors import PermanentError
from gwlb_fleet.panos import xmlapi
from gwlb_fleet.panos.panlogs import HTTP_PAYLOADS, INTAKE_PATH
from gwlb_fleet.settings import Settings

TOKEN = "tok-0123456789abcdef"
BASE = {
    "FLEET_REGION": "cn-hangzhou",
    "SCALING_GROUP_ID": "asg-1",
    "GWLB_SERVER_GROUP_ID": "sgp-1",
    "GWLB_LISTENER_ID": "lsn-1",
    "PANORAMA_HOST": "panorama.example.com",
    "PANORAMA_API_KEY_SECRET": "gwlb/panorama-api-key",
    "PANORAMA_COMMIT_ADMINS": "gwlb-fleet",
    "PANORAMA_TEMPLATE": "gwlb-template",
    "PANORAMA_TEMPLATE_STACK": "gwlb-stack",
    "PANORAMA_DEVICE_GROUP": "gwlb-fw",
    "PANLOGS_TOKEN_SECRET": "gwlb/intake-token",
    "PANLOGS_INTAKE_URL": "https://gwlb-intake-123.cn-hangzhou.fcapp.run",
}


def settings(**more: str) -> Settings:
    return Settings.model_validate({**BASE, **more})


def canonical(text: str | bytes) -> str:
    """One spelling of an element: children in order, texts stripped, attributes sorted."""
    element = ET.fromstring(text)
    for node in element.iter():
        node.text = (node.text or "").strip() or None
        node.tail = None
    return ET.canonicalize(ET.tostring(element, encoding="unicode"))


def sdk_panorama() -> Panorama:
    panorama = Panorama("panorama.example.com", api_key="unused")
    panorama._version_info = (10, 1, 0)  # the PAN-OS version whose element names are built
    return panorama


# --- the same as pan-os-python's ------------------------------------------------------------------


def test_the_http_server_profile_is_pan_os_pythons() -> None:
    want = panlogs.wanted(settings(), TOKEN).profile
    template = Template("gwlb-template")
    sdk_panorama().add(template)
    shared = Vsys("shared")  # F-PANLF-1: the template's shared scope
    template.add(shared)
    profile = SdkProfile(
        want.name,
        traffic_name="gwlb-fleet-traffic",
        traffic_uri_format=INTAKE_PATH,
        traffic_payload=HTTP_PAYLOADS["traffic"],
        threat_name="gwlb-fleet-threat",
        threat_uri_format=INTAKE_PATH,
        threat_payload=HTTP_PAYLOADS["threat"],
    )
    shared.add(profile)
    profile.add(
        SdkServer(
            "intake",
            address="gwlb-intake-123.cn-hangzhou.fcapp.run",
            protocol="HTTPS",
            port=443,
            tls_version="1.2",
            http_method="POST",
        )
    )
    for header in (HttpThreatHeader, HttpTrafficHeader):
        profile.add(header("Content-Type", "application/json"))
        profile.add(header("X-Gwlb-Fleet-Token", TOKEN))
    assert xmlapi.http_profile_xpath("gwlb-template", want.name) == profile.xpath()
    assert xmlapi.HttpServerProfile.parse(ET.fromstring(profile.element_str())) == want
    assert xmlapi.HttpServerProfile.parse(ET.fromstring(want.element())) == want


def test_the_forwarding_profile_and_rule_logging_are_pan_os_pythons() -> None:
    want = panlogs.wanted(settings(), TOKEN).forwarding
    group = DeviceGroup("gwlb-fw")
    sdk_panorama().add(group)
    profile = LogForwardingProfile(want.name, description=want.description)
    group.add(profile)
    for log_type in ("threat", "traffic"):
        profile.add(
            LogForwardingProfileMatchList(
                f"gwlb-fleet-{log_type}",
                log_type=log_type,
                filter="All Logs",
                http_profiles=["gwlb-fleet-intake"],
            )
        )
    assert xmlapi.forwarding_profile_xpath("gwlb-fw", want.name) == profile.xpath()
    assert canonical(want.element()) == canonical(profile.element_str())
    rulebase = PreRulebase()
    group.add(rulebase)
    rule = SecurityRule("gwlb-allow", log_setting=want.name, log_end=True)
    rulebase.add(rule)
    assert xmlapi.security_rule_xpath("gwlb-fw", "gwlb-allow") == rule.xpath()
    sdk = ET.fromstring(rule.element_str())
    ours = ET.fromstring(f"<entry>{xmlapi.RuleLogging('gwlb-allow', want.name, True).element()}</entry>")
    assert {c.tag: c.text for c in ours} == {t: sdk.findtext(t) for t in ("log-setting", "log-end")}
    assert xmlapi.RuleLogging.parse(sdk) == xmlapi.RuleLogging("gwlb-allow", want.name, True)


def test_the_profile_sends_to_the_intake_with_the_token_header() -> None:
    want = panlogs.wanted(settings(PANLOGS_INTAKE_URL="https://intake.example.com:8443"), TOKEN)
    (server,) = want.profile.servers
    assert (server.address, server.port, server.protocol) == ("intake.example.com", 8443, "HTTPS")
    assert {f.log_type for f in want.profile.formats} == {"traffic", "threat"}
    for fmt in want.profile.formats:
        assert fmt.url_format == INTAKE_PATH and fmt.payload == HTTP_PAYLOADS[fmt.log_type]
        assert ("X-Gwlb-Fleet-Token", TOKEN) in fmt.headers
    assert all(
        m.send_http == (want.profile.name,) and m.filter == "All Logs" for m in want.forwarding.matches
    )


def test_the_intake_url_must_be_https_host_and_port() -> None:
    for bad in ("http://intake.example.com", "https://intake.example.com/panlogs", "intake.example.com"):
        with pytest.raises(ValueError, match="PANLOGS_INTAKE_URL"):
            settings(PANLOGS_INTAKE_URL=bad)


# --- what PAN-OS refuses --------------------------------------------------------------------------


def profile_with(server: str = "", fmt: str = "", top: str = "") -> ET.Element:
    return ET.fromstring(
        '<entry name="p"><server><entry name="s"><address>a.example.com</address>'
        f"{server}</entry></server><format><traffic><name>n</name>{fmt}</traffic></format>{top}</entry>"
    )


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        (profile_with(server="<protocol>FTP</protocol>"), "protocol 'FTP'"),
        (profile_with(server="<port>70000</port>"), "port '70000'"),
        (profile_with(server="<tls-version>1.3</tls-version>"), "tls-version '1.3'"),
        (profile_with(server="<colour>red</colour>"), "unexpected element <colour>"),
        (profile_with(fmt="<body>x</body>"), "format traffic: unexpected element <body>"),
        (profile_with(fmt="<headers><value>x</value></headers>"), "<value> where only <entry> may be"),
        (profile_with(top="<url-format>/x</url-format>"), "unexpected element <url-format>"),
        (ET.fromstring('<entry name="p"><format/></entry>'), "no server"),
    ],
)
def test_a_profile_pan_os_would_refuse_is_refused_naming_the_fault(entry: ET.Element, named: str) -> None:
    with pytest.raises(xmlapi.ConfigSchemaError, match="HTTP server profile p") as raised:
        xmlapi.HttpServerProfile.parse(entry)
    assert named in str(raised.value)


def test_a_misplaced_format_section_is_refused() -> None:
    entry = profile_with(top="")
    ET.SubElement(entry.find("format"), "flows")  # type: ignore[arg-type]
    with pytest.raises(xmlapi.ConfigSchemaError, match="format <flows> is not a log type"):
        xmlapi.HttpServerProfile.parse(entry)


def test_a_match_list_of_an_unknown_log_type_is_refused() -> None:
    entry = ET.fromstring(
        '<entry name="f"><match-list><entry name="m"><log-type>flows</log-type>'
        "<send-http><member>p</member></send-http></entry></match-list></entry>"
    )
    with pytest.raises(xmlapi.ConfigSchemaError, match="log-type 'flows'"):
        xmlapi.ForwardingProfile.parse(entry)


def test_documented_elements_we_do_not_write_make_a_profile_differ() -> None:
    want = panlogs.wanted(settings(), TOKEN).profile
    entry = ET.fromstring(want.element())
    ET.SubElement(entry.find("server/entry"), "username").text = "someone"  # type: ignore[arg-type]
    assert xmlapi.HttpServerProfile.parse(entry) != want


# --- set merges -----------------------------------------------------------------------------------


def test_set_merges_entries_members_and_texts_and_removes_nothing() -> None:
    target = ET.fromstring(
        '<entry name="r"><action>allow</action><log-setting>old</log-setting>'
        "<tag><member>a</member></tag></entry>"
    )
    xmlapi.merge_set(
        target,
        ET.fromstring('<entry name="r"><log-setting>new</log-setting><tag><member>b</member></tag></entry>'),
    )
    assert target.findtext("action") == "allow"
    assert target.findtext("log-setting") == "new"
    assert [m.text for m in target.findall("tag/member")] == ["a", "b"]


def test_log_xpaths_are_recognised_and_others_are_not() -> None:
    rule = xmlapi.security_rule_xpath("gwlb-fw", "gwlb-allow") + "/log-setting"
    assert xmlapi.parse_log_xpath(rule) == xmlapi.LogXpath("rules", "gwlb-fw", "gwlb-allow", "log-setting")
    assert xmlapi.parse_log_xpath(xmlapi.http_profiles_xpath("t")) == xmlapi.LogXpath("http-profiles", "t")
    vsys1 = xmlapi.http_profiles_xpath("t").replace("/config/shared/", "/config/devices/entry/vsys/entry/")
    assert xmlapi.parse_log_xpath(vsys1) is None
    assert xmlapi.parse_log_xpath(xmlapi.DEVICE_GROUPS_XPATH) is None


# --- the plan -------------------------------------------------------------------------------------


def test_the_plan_lists_the_panorama_requests_with_the_secrets_name_only() -> None:
    calls = plan.log_forwarding_calls(settings())
    shown = "\n".join(str(call) for call in calls)
    assert "gwlb/intake-token" in shown
    assert TOKEN not in shown
    assert [c.action for c in calls][:2] == ["type=config&action=get", "type=config&action=edit"]
    assert "type=commit&action=partial" in [c.action for c in calls]
    assert all(c.service == "panorama" for c in calls)


def test_the_auth_header_setting_has_the_agreed_default() -> None:
    assert settings().panlogs_auth_header == "X-Gwlb-Fleet-Token"
    with pytest.raises(ValueError, match="PANLOGS_AUTH_HEADER"):
        settings(PANLOGS_AUTH_HEADER="X Token")


def test_every_planned_request_and_parameter_is_in_the_facts() -> None:
    facts = (Path(__file__).resolve().parents[2] / "docs" / "api-facts.md").read_text()
    calls = [*plan.log_forwarding_calls(settings()), *plan.log_forwarding_removal_calls(settings())]
    for call in calls:
        for name in [call.action, *call.params]:
            assert re.search(rf"\b{re.escape(name)}\b", facts), (
                f"{call.action}.{name} not in docs/api-facts.md"
            )


# --- the push (commit-all, F-PAN-4) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "style"), [("device-group", "device group"), ("template-stack", "template stack")]
)
def test_the_commit_all_is_pan_os_pythons(kind: xmlapi.PushKind, style: str) -> None:
    ours = xmlapi.PushTarget(kind, "gwlb-fw").command("push it")
    theirs = PanoramaCommitAll(style, "gwlb-fw", description="push it")
    assert theirs.commit_action == xmlapi.COMMIT_ALL_ACTION
    assert canonical(ours) == canonical(theirs.element_str())


def test_a_commit_all_target_name_that_would_break_the_xml_is_refused() -> None:
    with pytest.raises(PermanentError, match="is not a name PAN-OS accepts"):
        xmlapi.PushTarget("device-group", 'dg"/><x').command("")


PUSH_ANSWER = """<result><job><id>7</id><type>CommitAll</type><status>FIN</status><result>OK</result>
<details><line>done</line></details><devices>
<entry name="0001"><serial-no>0001</serial-no><devicename>fw-a</devicename><result>OK</result></entry>
<entry name="0002"><serial-no>0002</serial-no><devicename>fw-b</devicename><result>FAIL</result>
<details><msg><errors><line>commit failed</line><line>validation error</line></errors></msg></details>
</entry></devices></job></result>"""


def test_a_push_job_succeeds_only_when_every_firewall_did() -> None:
    job = xmlapi.parse_push_job("7", ET.fromstring(PUSH_ANSWER))
    assert job.job.succeeded, "the job's own result is OK"
    assert not job.succeeded, "F-PAN-2: and a device's is not"
    assert job.failed_devices == (
        xmlapi.DevicePush("0002", "fw-b", "FAIL", "commit failed; validation error"),
    )
