"""The control plane's Function Compute functions, one thin module each.

``lifecycle``, ``scale``, ``health`` and ``reconcile`` each hold ``handler(event: bytes, context)``:
the frame of ``gwlb_fleet.handler`` (decode, parse, log context, idempotency) around one flow of
``gwlb_fleet.workflows``. ``panlogs`` (an HTTP trigger, invoked synchronously) holds the frame
of ``gwlb_fleet.intake``: FC's HTTP event in, PAN-OS logs to the flow logstore, the HTTP answer out.
template.yml names them (``functions.<name>.handler``), and names
``gwlb_functions.initialize`` as the instance initializer: FC runs it once per instance, before the
instance's first event.

A module here imports its flow and the frame, nothing else: the adapters, and with them the
vendor SDKs, are imported when the flow first uses a port (gwlb_fleet.app), so that each function pays
at cold start only for the clients it uses.
"""

from __future__ import annotations

import os
from typing import Any

# pydantic looks for plugins through importlib.metadata at the first model it builds: a scan of
# every distribution in the bundle, ~15 ms of every cold start, for plugins we do not use.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

# template.yml's asyncInvokeConfig.maxAsyncRetryAttempts per function, for the lab and the tests
# that play FC (tests/unit/test_template.py holds the two equal): how often FC invokes a failed
# event again before it goes to the dead letter.
ASYNC_RETRIES = {"lifecycle": 3, "scale": 2, "health": 2, "reconcile": 1}


def initialize(context: Any) -> None:
    """Once per FC instance: JSON log lines (FC's own handler would print plain text and drop the
    keys bound per request) and the settings read and checked, so that a missing or malformed
    variable fails the instance start with its name instead of every event."""
    from gwlb_fleet import logs
    from gwlb_fleet.app import get_app

    logs.configure()
    get_app()
