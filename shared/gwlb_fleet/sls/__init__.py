"""Log Service (SLS): the wire client (``client``, ``loggroup``), the flow-record schema every
appliance kind writes (``flowrecord``), project set-up (``setup``), the audit questions as queries
(``queries``, ``cli``), the control plane's audit log (``auditlog``, written by ``auditwriter``),
and in-memory fakes (``fakes``)."""
