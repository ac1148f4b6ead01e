"""The Geneve header the emulator puts on each flow: base header plus 32 bytes of options.

Seed 002's capture shows Alibaba's GWLB sending VNI 0 with 32 bytes of options whose layout
Alibaba does not publish. Two layouts stand in for it:

- ``aws``: AWS GWLB's published layout (class 0x0108: endpoint id, attachment id, flow cookie),
  which the agent can read into its flow records;
- ``opaque``: two options of an experimental class (0xFFF0, RFC 8926's range for experiments)
  that no reader knows, as Alibaba's are to us: the agent must return them byte for byte.

The header is built once per flow and compared byte for byte when the appliance returns it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gwlb_fleet import geneve

Layout = Literal["aws", "opaque"]
LAYOUTS: tuple[Layout, ...] = ("aws", "opaque")
OPAQUE_OPTION_CLASS = 0xFFF0
OPTIONS_LEN = 32


@dataclass(frozen=True)
class Encapsulator:
    layout: Layout = "aws"
    vni: int = 0
    endpoint_id: int = 0x0E5A_0000_0000_0001  # the GWLB endpoint (GWLBe) the flow came through
    attachment_id: int = 0x0A77_0000_0000_0001

    def options(self, flow_cookie: int, flow_hash: int) -> tuple[geneve.GeneveOption, ...]:
        if self.layout == "aws":
            return geneve.aws_options(self.endpoint_id, self.attachment_id, flow_cookie)
        return (
            geneve.GeneveOption(OPAQUE_OPTION_CLASS, 0x01,
                                self.endpoint_id.to_bytes(8, "big") + flow_cookie.to_bytes(4, "big")),
            geneve.GeneveOption(OPAQUE_OPTION_CLASS, 0x02,
                                self.attachment_id.to_bytes(8, "big") + flow_hash.to_bytes(4, "big")),
        )

    def header(self, flow_cookie: int, flow_hash: int) -> bytes:
        """The Geneve header (8 + 32 bytes) for one flow; inner packets are IPv4 (0x0800)."""
        header = geneve.GeneveHeader(protocol_type=geneve.PROTO_IPV4, vni=self.vni,
                                     options=self.options(flow_cookie, flow_hash))
        data = geneve.build(header)
        if header.options_length != OPTIONS_LEN:
            raise ValueError(f"layout {self.layout} gives {header.options_length} option bytes")
        return data
