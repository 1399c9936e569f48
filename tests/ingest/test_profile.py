"""Profile facts: candidates mined from what the owner said about themself, on a real store
and the demo personas' exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.export import import_export
from ingest.memory import MemoryIndex, open_memory
from ingest.profile import profile_candidates
from ingest.store import Store, open_store
from tests.ingest.helpers import DATA, OWNER, SCRUBBER, fill, msg


def test_profile_candidates_are_the_owners_present_statements(
    store: Store, memory: MemoryIndex
) -> None:
    fill(
        store,
        [
            msg(10, 1, 0, 2, "I live in York, by the way"),  # not the owner
            msg(10, 2, 1, OWNER, "oh nice! i live in leeds now lol"),
            msg(10, 3, 2, OWNER, "am i vegetarian? kind of"),  # a question
            msg(10, 4, 3, OWNER, "i was in paris last year"),  # past
            msg(10, 5, 4, OWNER, "i'm so tired today"),  # a state of the moment
            msg(10, 6, 5, OWNER, "i'll call you tomorrow"),  # future
            msg(10, 12, 5.5, OWNER, "i have the dentist at 8:40"),  # an appointment
            msg(10, 7, 6, OWNER, "i'm vegetarian btw"),
            msg(10, 8, 7, OWNER, "я не ем мясо )))"),
            msg(10, 9, 8, OWNER, "я купила новый велик"),  # past
            msg(10, 10, 9, OWNER, "у меня кошка муся"),
            msg(10, 11, 10, OWNER, "my number is +7 916 555-12-34 and i work at the bakery"),
            msg(20, 1, 0, OWNER, "i'm vegetarian, sorry!!"),  # said again: ranks higher
        ],
    )
    candidates = profile_candidates(memory, store, SCRUBBER, limit=10)
    assert candidates[0] == "i'm vegetarian"
    assert set(candidates) == {
        "i'm vegetarian",
        "i live in leeds now",
        "я не ем мясо",
        "у меня кошка муся",
        "i work at the bakery",
    }
    assert memory.facts() == []  # mined, never stored
    memory.add_fact("I'm vegetarian", source="history")
    assert "i'm vegetarian" not in profile_candidates(memory, store, SCRUBBER, limit=10)


@pytest.mark.parametrize("persona", ["", "_ru"])
def test_demo_profile_candidates(persona: str, tmp_path: Path) -> None:
    expected = json.loads((DATA / f"demo_memory{persona}.json").read_text())["profile_candidates"]
    with open_store(tmp_path / "twin.db") as store, open_memory(tmp_path / "memory.db") as memory:
        import_export(DATA / f"demo_export{persona}.json", store, progress=False)
        candidates = profile_candidates(memory, store, SCRUBBER, limit=10)
    missing = [e for e in expected if not any(c.casefold().startswith(e) for c in candidates)]
    assert not missing, candidates
