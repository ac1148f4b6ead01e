"""The PAN-OS XML API's texts and readings (gwlb_fleet.panos.xmlapi) and how the adapter classifies
pan-os-python's errors (gwlb_fleet.panos.panorama.translate)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pan.xapi
import pytest
from panos import errors as panos_errors

from gwlb_fleet.errors import NotFound, PermanentError, TransientError
from gwlb_fleet.panos import xmlapi
from gwlb_fleet.panos.panorama import translate
from gwlb_fleet.panos.xmlapi import PanosFailure
from gwlb_fleet.ports import CommitJob, PanDevice


def result(xml: str) -> ET.Element:
    element = ET.fromstring(xml).find("result")
    assert element is not None
    return element


def test_names_that_would_break_out_of_an_xpath_or_a_command_are_refused() -> None:
    assert xmlapi.device_group_member_xpath("gwlb fw", "0079") == (
        "/config/devices/entry[@name='localhost.localdomain']/device-group/entry[@name='gwlb fw']"
        "/devices/entry[@name='0079']"
    )
    for bad in ("x']|//*['", 'lm" devices member "x', "", "a" * 80):
        with pytest.raises(PermanentError):
            xmlapi.deactivate_licence(bad, "0079")
    with pytest.raises(PermanentError):
        xmlapi.show_job("1 or 2")


def test_show_devices_all() -> None:
    answer = result(
        '<response status="success"><result><devices>'
        '<entry name="0079A"><serial>0079A</serial><connected>yes</connected><hostname>fw-a</hostname>'
        "<ip-address>10.0.0.5</ip-address></entry>"
        '<entry name="0079B"><connected>no</connected></entry>'
        "</devices></result></response>"
    )
    assert xmlapi.parse_managed_devices(answer) == {
        "0079A": ("10.0.0.5", "fw-a", True),
        "0079B": ("", "", False),
    }
    assert xmlapi.parse_managed_devices(None) == {}


def test_memberships_merge_into_devices() -> None:
    groups = ET.fromstring(
        '<device-group><entry name="dg1"><devices><entry name="0079A"/></devices></entry>'
        '<entry name="dg2"/></device-group>'
    )
    assert xmlapi.parse_members(groups) == {"0079A": "dg1"}
    assert xmlapi.merge_devices(
        {"0079A": ("10.0.0.5", "fw-a", True)}, {"0079A": "dg1"}, {"0079C": "ts"}
    ) == [
        PanDevice("0079A", "10.0.0.5", "fw-a", True, "dg1", ""),
        PanDevice("0079C", "", "", False, "", "ts"),
    ]


def test_jobs() -> None:
    answer = result(
        '<response status="success"><result><job><id>12</id><status>FIN</status><result>FAIL</result>'
        "<details><line>Validation Error:</line><line> rule x is invalid </line></details>"
        "</job></result></response>"
    )
    assert xmlapi.parse_job("12", answer) == CommitJob(
        "12", "FIN", "FAIL", "Validation Error:; rule x is invalid"
    )
    with pytest.raises(NotFound):
        xmlapi.parse_job("12", result('<response status="success"><result/></response>'))


def test_other_answers() -> None:
    key = result(
        '<response status="success"><result>VM auth key 755036225328715 generated. '
        "Expires at: 2025/01/31 11:35:34</result></response>"
    )
    assert xmlapi.parse_vm_auth_key(key) == "755036225328715"
    plugin = result(
        '<response status="success"><result><devices><entry name="x"><serial>0079A</serial><ip>10.0.0.5</ip>'
        "</entry></devices></result></response>"
    )
    assert xmlapi.parse_licensed_serials(plugin) == {"0079A"}
    assert (
        xmlapi.parse_active_sessions(
            result("<response><result><num-active>42</num-active></result></response>")
        )
        == 42
    )
    with pytest.raises(PermanentError):
        xmlapi.parse_active_sessions(result("<response><result/></response>"))


@pytest.mark.parametrize(
    ("failure", "kind", "code"),
    [
        (PanosFailure("403", "Invalid Credential", 403), PermanentError, "Forbidden"),
        (PanosFailure("16", "Unauthorized request"), PermanentError, "Unauthorized"),
        (PanosFailure("", "Internal Server Error", 500), TransientError, "HTTP500"),
        (PanosFailure("", "Too many requests", 429), TransientError, "HTTP429"),
        (
            PanosFailure("", "Another commit/validate is in progress. Please try again later"),
            TransientError,
            "Busy",
        ),
        (PanosFailure("", "Configuration is locked by admin"), TransientError, "Busy"),
        (PanosFailure("22", "Session timed out"), TransientError, "Busy"),
        (PanosFailure("5", "Internal error"), TransientError, "InternalError"),
        (PanosFailure("7", "Object doesn't exist"), NotFound, "ObjectNotPresent"),
        (PanosFailure("", "job 9 not found"), NotFound, "NotFound"),
        (PanosFailure("10", "Reference count not zero"), PermanentError, "ReferenceCountNotZero"),
        (PanosFailure("6", "Bad Xpath"), PermanentError, "BadXpath"),
        (PanosFailure("", "Device 0079A is not connected"), PermanentError, "Error"),
    ],
)
def test_domain_errors(failure: PanosFailure, kind: type[Exception], code: str) -> None:
    error = xmlapi.domain_error(failure, "act")
    assert type(error) is kind
    assert (error.code, error.service) == (code, "panorama")


@pytest.mark.parametrize(
    ("exc", "status_code", "kind", "code"),
    [
        (
            panos_errors.PanURLError("URLError: code: 403 reason: Invalid Credential"),
            None,
            PermanentError,
            "Forbidden",
        ),
        (
            panos_errors.PanURLError("URLError: code: 502 reason: Bad Gateway"),
            None,
            TransientError,
            "HTTP502",
        ),
        (
            panos_errors.PanURLError("URLError: reason: [Errno 111] Connection refused"),
            None,
            TransientError,
            "Unreachable",
        ),
        (
            panos_errors.PanConnectionTimeout("URLError: reason: timed out"),
            None,
            TransientError,
            "Unreachable",
        ),
        (
            panos_errors.PanURLError(
                "URLError: reason: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"
            ),
            None,
            PermanentError,
            "TlsVerification",
        ),
        (panos_errors.PanCommitInProgress("A commit is in progress."), None, TransientError, "Busy"),
        (panos_errors.PanLockError("Configuration is locked by admin"), None, TransientError, "Busy"),
        (panos_errors.PanDeviceXapiError("Object doesn't exist"), "7", NotFound, "ObjectNotPresent"),
        (pan.xapi.PanXapiError("Invalid command"), "17", PermanentError, "InvalidCommand"),
        (TimeoutError("The read operation timed out"), None, TransientError, "Unreachable"),
        (ConnectionResetError(104, "Connection reset by peer"), None, TransientError, "Unreachable"),
    ],
)
def test_sdk_errors(exc: BaseException, status_code: str | None, kind: type[Exception], code: str) -> None:
    error = translate(exc, status_code, "act")
    assert type(error) is kind
    assert error.code == code
