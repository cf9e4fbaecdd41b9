"""The show page grows with what changes, not with steps x processes: a piece of SVG
that stays the same from step to step is in the page once."""
from lazyvm.view import page_html


def _spawns(n):
    return {"title": f"{n} spawns", "machine": {"memory": "32M"},
            "step": [{"do": "spawn", "as": f"p{i}"} for i in range(n)]}


def test_a_page_of_many_spawns_grows_linearly():
    small, big = len(page_html(_spawns(40))), len(page_html(_spawns(120)))
    # every state drawn in full gives 9x for 3x the steps (0.55 MB and 4.7 MB)
    assert big < 4.5 * small, (small, big)
    assert big < 400_000, big
