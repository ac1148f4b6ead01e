"""The XDP fast path's settings: socket by default (nothing loaded), the three modes accepted
from the environment as everywhere else, anything else refused naming the field."""

from __future__ import annotations

import pytest

from gwlb_agent.config import ConfigError, load_config

BASE = {"GWLB_AGENT_GWLB_CIDRS": "198.18.0.1/32"}


def test_the_socket_path_is_the_default() -> None:
    config = load_config(environ=BASE, config_path="/dev/null")
    assert (config.dataplane, config.xdp_interface, config.xdp_attach) == ("socket", "", "native-or-generic")


@pytest.mark.parametrize("mode", ["auto", "xdp", "socket"])
def test_each_dataplane_mode_is_accepted(mode: str) -> None:
    config = load_config(environ={**BASE, "GWLB_AGENT_DATAPLANE": mode}, config_path="/dev/null")
    assert config.dataplane == mode


def test_an_unknown_dataplane_names_the_field_and_where_it_came_from() -> None:
    with pytest.raises(ConfigError, match=r"dataplane: .*\(from environment GWLB_AGENT_DATAPLANE\)"):
        load_config(environ={**BASE, "GWLB_AGENT_DATAPLANE": "dpdk"}, config_path="/dev/null")


def test_an_interface_name_longer_than_the_kernels_is_refused() -> None:
    with pytest.raises(ConfigError, match="xdp_interface"):
        load_config(environ={**BASE, "GWLB_AGENT_XDP_INTERFACE": "x" * 16}, config_path="/dev/null")
