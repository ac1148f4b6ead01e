"""The control plane's workflows, over the ports: lifecycle (launch, terminate), scaling, health,
reconcile. Each module's ``handle(event, ctx)`` is what its FC function calls: the handler frame
(gwlb_fleet.handler) builds the ``WorkflowContext``; a workflow knows nothing of FC's invocation.

"Workflow" is a procedure of the control plane across invocations; "flow" is always a network
flow (the agent's flow table, the flow records)."""
