"""What a simulated day looked like: nodes, billed and pending instances over time, as a plot."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path

from engine.application import CisApplication
from engine.domain.instance import BILLED, PENDING, Instance
from engine.domain.node import Node


def timeline(app: CisApplication) -> list[tuple[datetime, dict[str, int]]]:
    """Counts after every event, in event-time order: ready nodes, billed and pending instances."""
    node_state: dict[object, str] = {}
    instance_state: dict[object, str] = {}
    points: list[tuple[datetime, dict[str, int]]] = []
    events = sorted((e for _, e in app.read()
                     if isinstance(e, Node.Event | Instance.Transitioned | Instance.Requested)),
                    key=lambda e: e.timestamp)
    for event in events:
        if isinstance(event, Node.Requested):
            node_state[event.originator_id] = "requested"
        elif isinstance(event, Node.Event):
            node_state[event.originator_id] = type(event).__name__.lower()
        elif isinstance(event, Instance.Requested):
            instance_state[event.originator_id] = "requested"
        else:
            instance_state[event.originator_id] = event.new_state()
        nodes = Counter(node_state.values())
        states = Counter(instance_state.values())
        points.append((event.timestamp, {
            "nodes up": nodes["ready"] + nodes["cordoned"] + nodes["uncordoned"],
            "billed instances": sum(states[s] for s in BILLED),
            "pending instances": sum(states[s] for s in PENDING),
        }))
    return points


def plot(app: CisApplication, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    points = timeline(app)
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=110)
    for series in ("nodes up", "billed instances", "pending instances"):
        ax.step([t for t, _ in points], [p[series] for _, p in points], where="post",
                label=series)
    ax.set_title(title)
    ax.set_xlabel("simulated time (UTC)")
    ax.set_ylabel("count")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
