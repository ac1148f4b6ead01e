"""A local SLS (Log Service) endpoint that the real SDK talks to: PutLogs, GetLogs with SQL,
logstores, indexes and saved searches, kept in SQLite, with switchable faults (server.py)."""

from gwlb_lab.sls.server import Fault, LocalSls

__all__ = ["Fault", "LocalSls"]
