"""``HashRing``: the key movement consistent hashing promises, measured on 100k keys."""

from __future__ import annotations

import random

import pytest

from sysdesign.blocks.cache.ring import HashRing, moved_fraction, ring_hash

KEYS = [f"user:{i}:profile" for i in range(100_000)]
NODES = [f"10.0.0.{i}:6380" for i in range(1, 9)]


@pytest.mark.parametrize("n", [4, 8])
def test_removing_one_of_n_nodes_moves_only_its_keys_about_1_over_n(n: int) -> None:
    before = HashRing(NODES[:n])
    gone = NODES[n // 2]
    after = HashRing([node for node in NODES[:n] if node != gone])
    moved = [k for k in KEYS if before.owner(k) != after.owner(k)]
    assert all(before.owner(k) == gone for k in moved)  # nobody else's keys move
    assert sum(before.owner(k) == gone for k in KEYS) == len(moved)  # and all of gone's do
    assert len(moved) / len(KEYS) == pytest.approx(1 / n, rel=0.2)


@pytest.mark.parametrize("n", [3, 7])
def test_adding_a_node_moves_about_1_over_n_plus_1_all_to_it(n: int) -> None:
    before = HashRing(NODES[:n])
    after = HashRing(NODES[: n + 1])
    new = NODES[n]
    moved = [k for k in KEYS if before.owner(k) != after.owner(k)]
    assert all(after.owner(k) == new for k in moved)
    assert moved_fraction(KEYS, before, after) == len(moved) / len(KEYS)
    assert len(moved) / len(KEYS) == pytest.approx(1 / (n + 1), rel=0.2)


def test_a_naive_modulo_placement_would_move_almost_everything() -> None:
    """The baseline the ring is measured against: hash(key) % N."""
    moved = sum(ring_hash(k) % 4 != ring_hash(k) % 5 for k in KEYS[:20_000]) / 20_000
    assert moved > 0.75


def test_shares_are_even_and_add_up_to_one() -> None:
    ring = HashRing(NODES)
    shares = ring.shares()
    assert set(shares) == set(NODES)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert max(shares.values()) < 1.3 / len(NODES)  # 1.25 measured with 160 vnodes
    counts = {node: 0 for node in NODES}
    for key in KEYS[:40_000]:
        counts[ring.owner(key)] += 1
    for node in NODES:
        assert counts[node] / 40_000 == pytest.approx(shares[node], abs=0.01)


def test_owners_are_distinct_start_at_the_owner_and_do_not_depend_on_join_order() -> None:
    ring = HashRing(NODES[:5])
    shuffled = NODES[:5]
    random.Random(7).shuffle(shuffled)
    other = HashRing(shuffled)
    for key in KEYS[:2_000]:
        owners = ring.owners(key, 3)
        assert len(set(owners)) == 3 and owners[0] == ring.owner(key)
        assert other.owners(key, 3) == owners
        assert ring.owners(key, 9) == ring.owners(key, 5)  # never more than the nodes
    # A replica set changes by one node at most when a node leaves.
    smaller = HashRing([n for n in NODES[:5] if n != NODES[0]])
    for key in KEYS[:2_000]:
        assert len(set(ring.owners(key, 2)) - set(smaller.owners(key, 2))) <= 1


def test_membership_errors() -> None:
    ring = HashRing(["a"])
    with pytest.raises(ValueError, match="already on the ring"):
        ring.add("a")
    with pytest.raises(ValueError, match="not on the ring"):
        ring.remove("b")
    ring.remove("a")
    assert len(ring) == 0 and ring.shares() == {}
    with pytest.raises(LookupError, match="no nodes"):
        ring.owner("k")
    with pytest.raises(LookupError, match="no nodes"):
        ring.owners("k", 2)
    with pytest.raises(ValueError, match="vnodes"):
        HashRing(vnodes=0)
    assert moved_fraction([], HashRing(["a"]), HashRing(["b"])) == 0.0
