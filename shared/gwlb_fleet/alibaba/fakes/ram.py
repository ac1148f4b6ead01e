"""RAM's GetRole in memory (F-RAM-1): the roles an account has."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from gwlb_fleet.alibaba.fakes.openapi import FakeOpenApiService

ROLE_NAME = re.compile(r"[A-Za-z0-9.-]{1,64}")  # F-RAM-1


@dataclass
class FakeRam(FakeOpenApiService):
    service: ClassVar[str] = "ram"

    roles: set[str] = field(default_factory=set)
    account_id: str = "1234567890123456"
    trusted_by: dict[str, str] = field(default_factory=dict)  # role -> the service that may assume it

    def api_get_role(self, name: str) -> dict[str, Any]:
        with self._api("GetRole"):
            if not name:
                raise self._fail("MissingParameter", "RoleName is mandatory for this action.")
            if not ROLE_NAME.fullmatch(name):
                raise self._fail("InvalidParameter", f"RoleName {name!r}")
            if name not in self.roles:
                raise self._fail("EntityNotExist.Role", "The role does not exist.")  # F-RAM-1
            role: dict[str, Any] = {
                "RoleName": name,
                "Arn": f"acs:ram::{self.account_id}:role/{name.lower()}",
            }
            if name in self.trusted_by:  # F-RAM-1: the trust policy, a JSON string
                role["AssumeRolePolicyDocument"] = json.dumps(
                    {
                        "Version": "1",
                        "Statement": [
                            {
                                "Action": "sts:AssumeRole",
                                "Effect": "Allow",
                                "Principal": {"Service": [self.trusted_by[name]]},
                            }
                        ],
                    }
                )
            return {"Role": role}
