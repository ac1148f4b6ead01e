"""A local Panorama: the PAN-OS XML API subset gwlb-fleet uses, over HTTPS with a private CA,
backed by fleet.fakes.panorama.FakePanorama (server.py), plus the licensing API (licensing.py)."""

from lab.panorama.server import LocalPanorama

__all__ = ["LocalPanorama"]
