"""The outcome sender thread: sends in order, and after a failure skips the rest and says so."""

from __future__ import annotations

from adapters.serve import OutcomeSender


def test_sends_everything_in_order_and_drains() -> None:
    sender, sent = OutcomeSender(), []
    for k in range(200):
        sender.put(lambda k=k: sent.append(k))
    assert sender.drain() is None
    assert sent == list(range(200))
    sender.close()


def test_a_failure_skips_the_rest_until_drained_then_sending_resumes() -> None:
    sender, sent = OutcomeSender(), []

    def broken() -> None:
        raise ConnectionError("broker away")

    sender.put(lambda: sent.append("a"))
    sender.put(broken)
    sender.put(lambda: sent.append("c"))  # skipped: the caller resends the whole batch
    failed = sender.drain()
    assert isinstance(failed, ConnectionError) and sent == ["a"]
    sender.put(lambda: sent.append("d"))
    assert sender.drain() is None and sent == ["a", "d"]
    sender.close()
