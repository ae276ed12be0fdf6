"""Transition names and reconciliation, pure: the same transition gets the same name in every process,
and memory that another leader wrote over never replaces what it wrote."""

from __future__ import annotations

from dataclasses import replace

from rqscope.monitor.alerts.evaluate import Observation
from rqscope.monitor.alerts.outbox import Delivery
from rqscope.monitor.alerts.rules import Rule
from rqscope.monitor.alerts.state import FIRING, PENDING, RESOLVED, Alert, Notification, advance
from rqscope.monitor.alerts.store import Loaded, reconcile

RULE = Rule(name="Backlog", kind="queue_depth", threshold=3, for_seconds=10)
LABELS = (("queue", "default"),)


def step(states: dict[str, Alert], active: bool, now: float, epoch: int = 7) -> tuple[dict[str, Alert], list[str]]:
    observation = Observation(RULE, LABELS, 5.0 if active else 0.0, active)
    current, notes = advance(states, [observation], {RULE.name}, now, repeat_seconds=100, epoch=epoch)
    return current, [n.status for n in notes]


def only(states: dict[str, Alert]) -> Alert:
    [alert] = states.values()
    return alert


def test_each_notification_of_an_alert_is_a_new_transition_and_a_new_incident_keeps_counting() -> None:
    states, _ = step({}, True, 0)
    assert (only(states).state, only(states).transition) == (PENDING, (7, 0))
    states, notes = step(states, True, 10)
    assert notes == [FIRING] and only(states).transition == (7, 1)
    states, notes = step(states, True, 110, epoch=9)  # repeated after `repeat_seconds`
    assert notes == [FIRING] and only(states).transition == (7, 2)
    states, notes = step(states, False, 120)
    assert notes == [RESOLVED] and only(states).transition == (7, 3)
    states, _ = step(states, True, 130, epoch=12)  # the same alert again: its record goes on
    assert (only(states).state, only(states).transition) == (PENDING, (7, 3))
    states, notes = step(states, True, 140)
    assert notes == [FIRING] and only(states).transition == (7, 4)


def test_two_processes_evaluating_the_same_state_name_the_transition_alike() -> None:
    ones = [step(step({}, True, start)[0], True, start + 10)[0] for start in (0.0, 3.0)]
    first, second = (only(states) for states in ones)
    assert first.started_at != second.started_at and first.transition == second.transition
    notes = [Notification(FIRING, alert) for alert in (first, second)]
    assert Delivery.of("hook", notes[0], 10).id == Delivery.of("hook", notes[1], 13).id


def alert(state: str, seq: int) -> Alert:
    return Alert("f", "Backlog", "queue_depth", "warning", LABELS, "", 5.0, state, 0.0, epoch=7, seq=seq)


def delivery(state: str, seq: int) -> Delivery:
    return Delivery.of("hook", Notification(state, alert(state, seq)), 0.0)


def test_memory_replaces_the_stored_state_only_when_nothing_was_written_since() -> None:
    memory, kept = {"f": alert(FIRING, 1)}, [delivery(FIRING, 1)]
    untouched = Loaded({}, 4, [], [], (0, 0))
    assert reconcile(untouched, memory, kept, base=4) == (memory, kept)
    written = Loaded({"f": alert(RESOLVED, 2)}, 6, [], [], (0, 0))  # another leader fired and resolved it
    assert reconcile(written, memory, kept, base=4) == ({"f": alert(RESOLVED, 2)}, [])


def test_memory_or_a_hand_over_counts_where_it_went_through_a_transition_the_stored_state_has_not() -> None:
    handed = [alert(RESOLVED, 2)]
    loaded = Loaded({"f": alert(FIRING, 1)}, 6, handed, [delivery(FIRING, 1), delivery(RESOLVED, 2)], (1, 2))
    merged, kept = reconcile(loaded, {}, [], base=None)
    assert merged == {"f": alert(RESOLVED, 2)} and kept == [delivery(RESOLVED, 2)]
    pending_elsewhere = replace(alert(FIRING, 1), state=PENDING, since=50.0)  # no transition the stored one lacks
    merged, _ = reconcile(Loaded({"f": alert(FIRING, 1)}, 6, [pending_elsewhere], [], (1, 0)), {}, [], base=None)
    assert merged == {"f": alert(FIRING, 1)}
