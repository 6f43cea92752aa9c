"""Placement of imported models on the models service's replicas (services/gateway/placement.py): stable, about
1/N of the models move when a replica comes or goes, a hot model is spread over two, and the rest of the order
is the failover."""
from __future__ import annotations

from collections import Counter

from services.gateway.backends import Backend
from services.gateway.placement import Placement

MODELS = Backend("models", "http://127.0.0.1:9006", (), (), imported=True)


def urls(n: int) -> str:
    return ",".join(f"http://10.0.0.{i}:9006" for i in range(1, n + 1))


def test_each_model_has_one_replica_and_the_replicas_share_the_models():
    p = Placement(MODELS, urls(3), 5.0, hot_rps=1e9)
    firsts = Counter(p.pick(f"m{i}")[0].url for i in range(3000))
    assert len(firsts) == 3 and min(firsts.values()) > 800, firsts
    assert all(p.pick("m7")[0] is p.pick("m7")[0] for _ in range(10))
    order = p.order("m7")
    assert len(order) == 3 and len({r.name for r in order}) == 3  # the failover: every other replica, once
    assert order[0].name == f"models@{order[0].url.split('//')[1]}"


def test_a_fourth_replica_moves_about_a_quarter_of_the_models_and_only_to_itself():
    before, after = Placement(MODELS, urls(3), 5.0, 1e9), Placement(MODELS, urls(4), 5.0, 1e9)
    moved = [m for m in (f"m{i}" for i in range(4000)) if before.pick(m)[0].url != after.pick(m)[0].url]
    assert 0.2 < len(moved) / 4000 < 0.3, len(moved)
    assert {after.pick(m)[0].url for m in moved} == {"http://10.0.0.4:9006"}


def test_a_hot_model_alternates_between_its_first_two_replicas():
    p = Placement(MODELS, urls(3), 5.0, hot_rps=5)
    first, second = p.order("busy")[:2]
    seen = Counter(p.pick("busy")[0].url for _ in range(200))  # 200 requests at once: over 5 a second
    assert set(seen) == {first.url, second.url} and min(seen.values()) >= 90, seen
    assert {p.pick("quiet")[0].url for _ in range(3)} == {p.order("quiet")[0].url}


def test_without_replicas_the_backend_serves_everything():
    p = Placement(MODELS, "", 5.0, 100)
    assert [r.url for r in p.pick("anything")] == [MODELS.url]
