"""The control plane's flows, over the ports: lifecycle (launch, terminate), scaling, health,
reconcile. Each module's ``handle(event, invocation)`` is what its FC function calls."""
