"""In-memory SLS: the service (``service``) and the control plane's audit log (``auditlog``)."""
