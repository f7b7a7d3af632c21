"""The aggregator: three keyed stateful stages over the durable state store.

Clients and transactions are keyed by client id, scores by CPF, and several clients may
share a CPF. The join is one more keyed stage rather than an index beside the state:

* ``join`` (:class:`JoinScores`, key: CPF) keeps a CPF's latest score and the ids of the
  clients seen with it. A client record goes on as ``("client", id, cpf, score)``; a
  score goes on as ``("score", id, cpf, score)`` once per client of that CPF. It also
  passes the client and score rows on to their tables.
* ``aggregate`` (:class:`ClientProfiles`, key: client id) folds those and the scored
  transactions into the client's state (``_figures``: O(1) per transaction), and emits
  one compact :data:`Change` per client it changed (the outputs are stored with the
  message until delivered: small is cheap). ``profiles`` makes the client's
  ``client_profiles`` row of it. A score for a CPF the client no longer has (it was
  sent again with another CPF) is ignored.
* ``totals`` (:class:`GlobalTotals`, one key) folds the changes into :class:`Totals` and
  emits the ``metrics`` rows after every message that changed them.

Each stage runs on one lane, so what one key receives arrives in the order it was sent
(two records of one client with different CPFs go through ``join`` in order). Each commits
its state with the names of the messages it applied before anything leaves it, so an
acknowledged batch is in all three states, a batch sent again is not applied twice, and
outputs committed but not delivered before a crash are sent again at start (named as
before, so the next stage recognises them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..state import KeyedHandler
from ._figures import (
    CPF,
    RECENT,
    SCORE,
    TX,
    Part,
    RecentWindow,
    Score,
    Totals,
    add_transaction,
    metric_rows,
    new_client,
    profile,
    score_of,
)

__all__ = [
    "Change",
    "ClientProfiles",
    "GlobalTotals",
    "JoinScores",
    "ProfileRows",
    "Rows",
    "client_key",
    "is_client",
    "is_link",
    "is_score",
]

#: What ``aggregate`` emits per client a message changed: (client id, its figures, its
#: score, valid (a client record was seen), became valid, became active, the parts of its
#: new transactions). ``profiles`` makes the profile row of it, ``totals`` folds it.
Change = tuple[int, tuple[int, ...], Score | None, bool, bool, bool, list[Part]]


class JoinScores(KeyedHandler):
    """Key: CPF. State: ``[score or None, [client ids]]``. Emits the join records and the
    client and score rows themselves (the ``clients`` and ``scores`` tables are written
    from here: a batch sent again is not applied, so it cannot put back an older row)."""

    def update(self, cpf: str, state: Any, records: list[Any]) -> tuple[Any, list[Any]]:
        if state is None:
            state = [None, []]
        out: list[Any] = []
        for record in records:
            out.append(record)
            if "id" in record:  # a client
                client_id = record["id"]
                if client_id not in state[1]:
                    state[1].append(client_id)
                out.append(("client", client_id, cpf, state[0]))
            else:
                state[0] = score_of(record)
                out.extend(("score", client_id, cpf, state[0]) for client_id in state[1])
        return state, out


def client_key(record: Any) -> int:
    """``aggregate``'s key: a transaction's ``client_id``, a join record's client id."""
    return record["client_id"] if type(record) is dict else record[1]  # type: ignore[no-any-return]


class ClientProfiles(KeyedHandler):
    """Key: client id. State: the client's figures, CPF and score (``_figures``)."""

    def __init__(self, as_of: str) -> None:
        self.window = RecentWindow.ending(as_of)

    def update(self, client_id: int, state: Any, records: list[Any]) -> tuple[Any, list[Any]]:
        if state is None:
            state = new_client()
        was_valid = state[CPF] is not None
        was_active = was_valid and state[RECENT] >= 1
        window = self.window
        parts: list[Part] = []
        changed = False
        for record in records:
            if type(record) is dict:  # a scored transaction
                parts.append(add_transaction(state, record, window))
            elif record[0] == "client" or record[2] == state[CPF]:
                state[CPF], state[SCORE] = record[2], record[3]
                changed = True
        valid = state[CPF] is not None
        if not (parts or changed):
            return state, []
        change: Change = (
            client_id,
            tuple(state[:CPF]),
            state[SCORE],
            valid,
            valid and not was_valid,
            valid and state[RECENT] >= 1 and not was_active,
            parts,
        )
        return state, [change]


class ProfileRows:
    """``profiles``: the ``client_profiles`` rows of ``aggregate``'s changes (valid
    clients only)."""

    def __call__(self, changes: list[Change]) -> list[dict[str, Any]] | None:
        return [profile(c[0], c[1], c[2]) for c in changes if c[3]] or None


class GlobalTotals(KeyedHandler):
    """One key. State: :class:`Totals`. Folds ``aggregate``'s changes; emits the
    ``metrics`` rows after each message that changed them."""

    def update(self, key: Any, state: Any, records: list[Change]) -> tuple[Any, list[Any]]:
        totals: Totals = Totals() if state is None else state
        changed = False
        for client_id, figures, _, valid, became_valid, became_active, parts in records:
            if not (parts or became_valid):
                continue  # a new score: no total changes
            totals.add_parts(parts)
            if valid:
                totals.client(client_id, figures[TX], became_valid, became_active)
            changed = True
        return totals, metric_rows(totals) if changed else []


class Rows:
    """Passes the records of a message that ``keep`` accepts (None: none)."""

    def __init__(self, keep: Callable[[Any], bool]) -> None:
        self.keep = keep

    def __repr__(self) -> str:
        return f"Rows({self.keep.__name__})"

    def __call__(self, records: list[Any]) -> list[Any] | None:
        keep = self.keep
        return [r for r in records if keep(r)] or None


def is_link(record: Any) -> bool:
    """A join record (what ``aggregate`` takes from ``join``)."""
    return type(record) is tuple


def is_client(record: Any) -> bool:
    return type(record) is dict and "id" in record


def is_score(record: Any) -> bool:
    return type(record) is dict and "score" in record
