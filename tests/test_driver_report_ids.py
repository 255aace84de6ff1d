"""A node report's id names the VM, not only the node: an agent that guesses a node's id
(a counter) and sends something under the driver's id first cannot make the driver's real
report a `command_id_reused`."""

from __future__ import annotations

import json

from adapters import driver_reports as reports
from adapters.bootstrap import connect
from tests import builders as b


def test_a_guessed_id_does_not_swallow_the_drivers_loss_report() -> None:
    node = b.NODE
    with connect("memory://") as engine:
        setup = engine.apply(b.lines(b.price_book(), b.networks(), b.pool(min_nodes=1)))
        assert [o.status for o in setup] == ["accepted"] * 3
        ready = reports.node_ready(b.CELL, node, "i-0a1b2c", b.T0.replace(second=5))
        # What a guessing agent would send under the id a driver used to use for the loss.
        squat = b.report("ReportNodeReady", 6, node_id=node)
        squat["command_id"] = reports.report_id(b.CELL, "node", node, "lost")
        lost = reports.node_lost(b.CELL, node, "i-0a1b2c", b.T0.replace(second=7), "gone")
        outcomes = engine.apply([ready.model_dump_json(), json.dumps(squat),
                                 lost.model_dump_json()])
        assert [o.status for o in outcomes] == ["accepted", "accepted", "accepted"]
        assert engine.processor.world.node(b.CELL, node).state == "lost"
    assert reports.node_lost(b.CELL, node, "i-1", b.T0, "x").command_id != \
        reports.node_lost(b.CELL, node, "i-2", b.T0, "x").command_id
