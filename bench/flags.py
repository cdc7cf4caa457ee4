"""Flag evaluation cost against its peers, measured in one process.

Run: .venv/bin/python bench/flags.py [--quick]

Each figure is the median over several repeats of the mean time per evaluation. Ours and the
peers evaluate the same flags: a plain switch, and a 30 % rollout behind one targeting rule
(country in KR/JP) for a user outside the rule. Ratios are ours / peer's, beside the targets of
issue 4.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from growthbook import GrowthBook
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from resilience.flags import Flags, InMemorySource, openfeature_provider

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import per_call_sync, us

warnings.filterwarnings("ignore", category=DeprecationWarning)
logging.getLogger("growthbook").setLevel(logging.ERROR)

RULE = {"attr": "country", "in": ["KR", "JP"], "on": True}
ATTRS = {"country": "US"}


def line(label: str, ours: float, peer_label: str, peer: float, target: float | None) -> bool:
    ratio = ours / peer
    ok = target is None or ratio <= target
    goal = "" if target is None else f"  target <= {target:.2f}x  {'OK' if ok else 'MISSED'}"
    print(f"{label:<34} {us(ours)}  vs {peer_label:<30} {us(peer)}  = {ratio:5.3f}x{goal}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, repeats = (20_000, 3) if args.quick else (100_000, 7)
    n_peer = n // 5  # the peers are 10-100x slower; fewer calls give the same precision

    flags = Flags(
        InMemorySource(
            {
                "kill-recommendations": {"on": True},
                "new-ranking": {"on": True, "rollout": 0.3, "rules": [RULE]},
            }
        )
    )

    # openfeature-sdk, with its own in-memory provider and with ours behind the same client
    api.set_provider(
        InMemoryProvider({"kill-recommendations": InMemoryFlag("on", {"on": True, "off": False})}),
        domain="bench-in-memory",
    )
    api.set_provider(openfeature_provider(flags), domain="bench-resilience")
    of_mem = api.get_client(domain="bench-in-memory")
    of_ours = api.get_client(domain="bench-resilience")
    ctx = EvaluationContext(targeting_key="user-17", attributes=ATTRS)

    gb = GrowthBook(
        attributes={"id": "user-17", **ATTRS},
        features={
            "kill-recommendations": {"defaultValue": True},
            "new-ranking": {
                "defaultValue": False,
                "rules": [
                    {"condition": {"country": {"$in": ["KR", "JP"]}}, "force": True},
                    {"force": True, "coverage": 0.3, "hashAttribute": "id"},
                ],
            },
        },
    )
    assert flags.enabled("kill-recommendations") and gb.is_on("kill-recommendations")
    assert of_mem.get_boolean_value("kill-recommendations", False)

    switch = per_call_sync(lambda: flags.enabled("kill-recommendations"), n, repeats)
    rollout = per_call_sync(lambda: flags.enabled("new-ranking", "user-17", ATTRS), n, repeats)
    value = per_call_sync(lambda: flags.value("kill-recommendations", False), n, repeats)
    of_mem_t = per_call_sync(
        lambda: of_mem.get_boolean_value("kill-recommendations", False), n_peer, repeats
    )
    of_ours_t = per_call_sync(
        lambda: of_ours.get_boolean_value("kill-recommendations", False), n_peer, repeats
    )
    of_ours_rollout = per_call_sync(
        lambda: of_ours.get_boolean_value("new-ranking", False, ctx), n_peer, repeats
    )
    gb_switch = per_call_sync(lambda: gb.is_on("kill-recommendations"), n_peer, repeats)
    gb_rollout = per_call_sync(lambda: gb.is_on("new-ranking"), n_peer, repeats)

    print(f"n={n} (peers {n_peer}) repeats={repeats}; median of mean time per evaluation\n")
    print(f"{'resilience enabled() plain switch':<34} {us(switch)}")
    print(f"{'resilience value() static value':<34} {us(value)}")
    print(f"{'resilience enabled() 30% + 1 rule':<34} {us(rollout)}")
    print(f"{'openfeature in-memory provider':<34} {us(of_mem_t)}")
    print(f"{'openfeature client, our provider':<34} {us(of_ours_t)}  (switch)")
    print(f"{'openfeature client, our provider':<34} {us(of_ours_rollout)}  (30% + 1 rule)")
    print(f"{'growthbook is_on plain':<34} {us(gb_switch)}")
    print(f"{'growthbook is_on 30% + 1 rule':<34} {us(gb_rollout)}")
    print()
    ok = line("plain switch", switch, "openfeature in-memory", of_mem_t, 0.05)
    ok &= line("plain switch", switch, "growthbook is_on", gb_switch, 0.25)
    ok &= line("30% rollout + 1 rule", rollout, "growthbook is_on (rollout)", gb_rollout, 0.5)
    line("openfeature client, our provider", of_ours_t, "openfeature in-memory", of_mem_t, None)
    flags.close()
    api.clear_providers()
    print("\nall targets met" if ok else "\nsome targets MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
