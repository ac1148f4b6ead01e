"""The VM-Series bootstrap: ``init-cfg.txt`` in the scaling configuration's user data.

PAN-OS reads these keys on first boot (Palo Alto's "Bootstrap Configuration Files"): the Panorama
to register with, the template stack and device group to join, the vm-auth-key that lets it
register, the auth codes to license itself, plugin op commands and op-command modes (jumbo
frames: Geneve adds 68 bytes to every packet). The vm-auth-key expires: reconcile generates a new
one in Panorama and rewrites the user data before that happens.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass


@dataclass(frozen=True)
class InitCfg:
    panorama_server: str
    template_stack: str
    device_group: str
    vm_auth_key: str
    authcodes: str = ""
    panorama_server_2: str = ""
    plugin_op_commands: str = ""
    op_command_modes: str = "jumbo-frame"
    dhcp: bool = True  # management interface by DHCP, as on ECS

    def render(self) -> str:
        lines = [
            "type=dhcp-client" if self.dhcp else "type=static",
            f"panorama-server={self.panorama_server}",
        ]
        if self.panorama_server_2:
            lines.append(f"panorama-server-2={self.panorama_server_2}")
        lines += [
            f"tplname={self.template_stack}",
            f"dgname={self.device_group}",
            f"vm-auth-key={self.vm_auth_key}",
            "dhcp-accept-server-hostname=yes",
            "dhcp-accept-server-domain=yes",
        ]
        if self.authcodes:
            lines.append(f"authcodes={self.authcodes}")
        if self.plugin_op_commands:
            lines.append(f"plugin-op-commands={self.plugin_op_commands}")
        if self.op_command_modes:
            lines.append(f"op-command-modes={self.op_command_modes}")
        for line in lines:
            if "\n" in line or "\r" in line:
                raise ValueError(f"init-cfg value with a line break: {line.split('=', 1)[0]}")
        return "\n".join(lines) + "\n"

    def user_data(self) -> str:
        """What ECS takes as UserData: the file, base64-encoded."""
        return base64.b64encode(self.render().encode()).decode()


def parse(text: str) -> dict[str, str]:
    """The keys of an init-cfg.txt (for tests and for checking what a configuration holds)."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            values[key.strip()] = value.strip()
    return values
