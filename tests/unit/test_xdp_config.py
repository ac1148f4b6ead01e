"""The XDP fast path's settings: socket by default (nothing loaded), the three modes accepted
from the environment as everywhere else, anything else refused naming the field."""

from __future__ import annotations

import pytest

from gwlb_agent.config import ConfigError, load_config
from gwlb_agent.xdp import fastpath

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


def test_the_fast_path_has_its_own_modest_capacity() -> None:
    config = load_config(environ=BASE, config_path="/dev/null")
    assert (config.xdp_max_flows, config.flows.max_flows) == (131_072, 2_000_000)
    config = load_config(environ={**BASE, "GWLB_AGENT_XDP_MAX_FLOWS": "4096"}, config_path="/dev/null")
    assert config.xdp_max_flows == 4096


@pytest.mark.parametrize("value", ["0", "-1", str((1 << 26) + 1)])
def test_a_fast_path_capacity_out_of_range_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="xdp_max_flows"):
        load_config(environ={**BASE, "GWLB_AGENT_XDP_MAX_FLOWS": value}, config_path="/dev/null")


class _Loaded(Exception):
    pass


@pytest.mark.parametrize(
    ("xdp_max_flows", "max_flows", "sized"), [(131_072, 2_000_000, 131_072), (131_072, 50_000, 50_000)]
)
def test_the_maps_are_sized_by_xdp_max_flows_never_above_the_flow_tables(
    monkeypatch: pytest.MonkeyPatch, xdp_max_flows: int, max_flows: int, sized: int
) -> None:
    asked: list[int] = []

    def program(max_flows: int = 0) -> None:
        asked.append(max_flows)
        raise _Loaded

    monkeypatch.setattr(fastpath, "XdpProgram", program)
    environ = {
        **BASE,
        "GWLB_AGENT_XDP_MAX_FLOWS": str(xdp_max_flows),
        "GWLB_AGENT_FLOWS__MAX_FLOWS": str(max_flows),
    }
    with pytest.raises(_Loaded):
        fastpath.open_fast_path(load_config(environ=environ, config_path="/dev/null"))
    assert asked == [sized]
