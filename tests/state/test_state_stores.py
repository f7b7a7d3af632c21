"""The StateStore protocol, the same for every store: memory, SQLite and PostgreSQL
(``persistent_store`` in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable

from asyncpipe.state import StateCommit, StateStore, StoredMark

DAY = 24 * 3600.0


class Clock:
    """Wall-clock time the test sets."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_commit_is_read_back_and_survives_reopening(
    persistent_store: Callable[..., StateStore],
) -> None:
    store = persistent_store()
    await store.open()
    try:
        await store.commit(
            "n",
            StateCommit(
                changes=[(b"a", b"1"), (b"b", b"2"), (b"\x00", b"")],
                marks=[("m1", b"r1", b"o1"), ("m2", b"r2", None)],
                meta={"watermark:0": b"7"},
            ),
        )
        await store.commit("other", StateCommit(changes=[(b"a", b"elsewhere")]))
    finally:
        await store.aclose()
    again = persistent_store()
    await again.open()
    try:
        assert await again.load("n", [b"a", b"\x00", b"missing"]) == {b"a": b"1", b"\x00": b""}
        assert sorted(await again.scan("n")) == [(b"\x00", b""), (b"a", b"1"), (b"b", b"2")]
        assert await again.seen("n", ["m1", "m2", "m3"]) == {
            "m1": StoredMark(b"r1", b"o1"),
            "m2": StoredMark(b"r2", None),
        }
        assert await again.undelivered("n") == [("m1", b"o1")]
        assert await again.read_meta("n") == {"watermark:0": b"7"}
        assert await again.load("other", [b"a", b"b"]) == {b"a": b"elsewhere"}
        assert await again.seen("other", ["m1"]) == {}
    finally:
        await again.aclose()


async def test_updates_deletes_delivery_and_commit_order(
    persistent_store: Callable[..., StateStore],
) -> None:
    store = persistent_store()
    await store.open()
    try:
        names = [f"m{i:02}" for i in range(30)]
        for i in range(0, 30, 3):  # ten commits of three marks, each with outputs
            group = names[i : i + 3][::-1]  # commit order is not name order
            marks: list[tuple[str, bytes, bytes | None]] = [
                (name, b"", name.encode()) for name in group
            ]
            await store.commit("n", StateCommit(changes=[(b"k", str(i).encode())], marks=marks))
        order = [name for i in range(0, 30, 3) for name in names[i : i + 3][::-1]]
        assert [name for name, _ in await store.undelivered("n")] == order
        await store.commit(
            "n",
            StateCommit(
                changes=[(b"k", None), (b"j", b"new")],
                marks=[("m00", b"again", b"again")],  # a mark is written once
                delivered=order[:20],
                meta={"watermark:0": b"9"},
            ),
        )
        assert await store.undelivered("n") == [(name, name.encode()) for name in order[20:]]
        assert await store.load("n", [b"k", b"j"]) == {b"j": b"new"}
        assert (await store.seen("n", ["m00"]))["m00"] == StoredMark(b"", None)
        assert await store.read_meta("n") == {"watermark:0": b"9"}
        many: list[tuple[bytes, bytes | None]] = [
            (str(i).encode(), b"v") for i in range(2500)
        ]  # beyond one statement's rows
        await store.commit("n", StateCommit(changes=many))
        assert len(await store.load("n", [k for k, _ in many])) == 2500
    finally:
        await store.aclose()


async def test_delivered_marks_expire_after_the_ttl_undelivered_ones_stay(
    persistent_store: Callable[..., StateStore],
) -> None:
    clock = Clock()
    store = persistent_store(dedupe_ttl=DAY, clock=clock)
    await store.open()
    try:
        marks = [("old", b"", b"out"), ("old-delivered", b"", b"out"), ("absorbed", b"", None)]
        await store.commit("n", StateCommit(marks=marks))
        await store.commit("n", StateCommit(delivered=["old-delivered"]))
        clock.now += 2 * DAY
        await store.commit("n", StateCommit(marks=[("new", b"", None)]))
        assert set(await store.seen("n", ["old", "old-delivered", "absorbed", "new"])) == {
            "old",  # its outputs are not delivered yet: kept
            "new",
        }
    finally:
        await store.aclose()
