"""RAM over alibabacloud_ram20150501: set-up reads the service roles the fleet depends on
(F-RAM-1/2). Read only: service-linked roles are the operator's to create (docs/deploy.md).
"""

from __future__ import annotations

from alibabacloud_ram20150501 import models as ram_models
from alibabacloud_ram20150501.client import Client as RamClient

from gwlb_fleet.alibaba.tea import RetryPolicy, SetupApi, TeaApi, setup_calls
from gwlb_fleet.settings import Settings

SETUP_CALLS = setup_calls(ram_models, "GetRole")  # F-RAM-1
SETUP_RAM_ACTIONS: frozenset[str] = frozenset({"ram:GetRole"})

CLOUDMONITOR_ROLE = "AliyunCloudMonitorDefaultRole"  # CloudMonitor writes alarms to MNS: F-CMS-13
AUTOSCALING_ROLE = "AliyunServiceRoleForAutoScaling"  # F-ESS-9
SERVICE_ROLES = (CLOUDMONITOR_ROLE, AUTOSCALING_ROLE)


def setup_api(settings: Settings, retry_policy: RetryPolicy | None = None) -> SetupApi:
    return SetupApi(TeaApi.from_settings("ram", settings, RamClient, retry_policy), SETUP_CALLS)
