"""A local Panorama: the PAN-OS XML API subset gwlb-fleet uses, over HTTPS with a private CA,
backed by gwlb_fleet.panos.fakes.FakePanorama (server.py), plus the licensing API (licensing.py)."""

from gwlb_lab.panorama.server import LocalPanorama

__all__ = ["LocalPanorama"]
