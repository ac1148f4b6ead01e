"""The control plane's workflows, over the ports: lifecycle (launch, terminate), scaling, health,
reconcile. Each module's ``handle(event, invocation)`` is what its FC function calls.

"Workflow" is a procedure of the control plane across invocations; "flow" is always a network
flow (the agent's flow table, the flow records)."""
