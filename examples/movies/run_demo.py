"""The main job: start the movies service with real dependencies and play a scenario.

Started for real, on loopback: three memcached zones (the profile cache), a Toxiproxy server in
front of recommendations, the catalog, ratings and recommendations services as processes, and
the movies service with its admin dashboard. Then, while traffic flows:

1. steady traffic;
2. FIT runs take ratings down, then slow recommendations, with request-scoped faults (signed
   tags; the fallback is served, the page stays 200), while untagged traffic flows alongside:
   it counts the untagged pages degraded during and after each run (the check wants 0);
   2b. staging only: the same slowness as a Toxiproxy toxic, a global fault that also slows
   untagged traffic (the runner needs --allow-global-faults and says so in its report);
3. the local cache zone's memcached is killed (no profile misses: the other zones answer);
4. the kill switch ``kill-recommendations`` is flipped in the flags file (no more calls), or,
   with ``--flags-store etcd``, written to a real etcd that the service watches;
5. recovery: the zone comes back, the switch goes off, every circuit closes.

It ends with a summary (``--summary-json F`` writes it as JSON) and the dashboard URL;
``--keep-running`` keeps everything up until Ctrl-C. Exit status 0 when every check held.

Run: ``scripts/demo`` (installs what is missing),
or ``.venv/bin/python -m examples.movies.run_demo``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from examples.movies.procs import Missing, Processes, find, free_port
from examples.movies.service import Movies
from resilience import State, StateChange, fit, registry
from resilience.fit import Recipe, ToxiproxyClient
from resilience.flags import EtcdSource

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
USERS = [f"u{i}" for i in range(1, 41)]


def say(text: str = "") -> None:
    print(text, flush=True)


def write_flags(path: Path | EtcdSource, kill_recommendations: bool) -> None:
    doc = {
        "flags": {
            "kill-recommendations": {"on": kill_recommendations},
            "circuits.ratings.timeout": {"value": 0.5},
        }
    }
    if isinstance(path, EtcdSource):  # fleet-wide: validated, compare-and-swapped, audited
        for name, spec in doc["flags"].items():
            path.write(name, spec, actor="demo")
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, path)  # atomic: the watcher never reads half a file


class Traffic:
    """Sends page requests and sums up what came back."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session: aiohttp.ClientSession | None = None

    async def burst(self, n: int, concurrency: int = 4) -> dict[str, Any]:
        """``n`` untagged page views, ``concurrency`` at a time."""
        assert self.session is not None
        statuses: list[int] = []
        latencies: list[float] = []
        degraded = {"ratings": 0, "recommendations": 0, "recommendations_switched_off": 0}
        queue = list(range(n))

        async def worker() -> None:
            while queue:
                i = queue.pop()
                user = USERS[i % len(USERS)]
                t0 = time.perf_counter()
                async with self.session.get(f"{self.base}/home/{user}") as resp:  # type: ignore[union-attr]
                    body = await resp.json()
                latencies.append(time.perf_counter() - t0)
                statuses.append(resp.status)
                for k in degraded:
                    degraded[k] += bool(body.get("degraded", {}).get(k))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        ok = statuses.count(200)
        return {
            "requests": n, "ok": ok, "statuses": sorted(set(statuses)),
            "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p99_ms": round(sorted(latencies)[int(0.99 * (len(latencies) - 1))] * 1000, 1),
            "degraded": degraded,
        }  # fmt: skip


def line(label: str, stats: dict[str, Any]) -> None:
    d = stats["degraded"]
    say(f"  {label:<34} {stats['ok']:3d}/{stats['requests']:<3d} pages 200   "
        f"p50 {stats['p50_ms']:6.1f} ms  p99 {stats['p99_ms']:6.1f} ms   "
        f"degraded: ratings {d['ratings']}, recommendations {d['recommendations']}")  # fmt: skip


def circuits() -> dict[str, str]:
    return {dep.name: dep.state.value for dep in registry()}


async def play(opts: argparse.Namespace) -> int:
    procs = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="movies-demo-"))
    flags_path: Path | EtcdSource = workdir / "flags.json"
    if opts.flags_store == "etcd":
        etcd = find("RESILIENCE_ETCD", "etcd")
        port, peer = free_port(), free_port()
        procs.start("etcd", [etcd, "--data-dir", str(workdir / "etcd"), "--listen-client-urls",
                             f"http://127.0.0.1:{port}", "--advertise-client-urls",
                             f"http://127.0.0.1:{port}", "--listen-peer-urls",
                             f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls",
                             f"http://127.0.0.1:{peer}", "--initial-cluster",
                             f"default=http://127.0.0.1:{peer}"], port)  # fmt: skip
        flags_path = EtcdSource([f"http://127.0.0.1:{port}"], "/movies/flags/")
        say(f"flags live in etcd at http://127.0.0.1:{port} under /movies/flags/")
    write_flags(flags_path, kill_recommendations=False)
    secret = secrets.token_hex(16)
    token = opts.admin_token or secrets.token_hex(8)
    summary: dict[str, Any] = {"checks": {}}
    runner: web.AppRunner | None = None
    transitions: list[str] = []
    main_task = asyncio.current_task()
    if main_task is not None:  # SIGTERM (kill, CI timeouts) stops the processes like Ctrl-C
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    try:
        say("starting: 3 memcached zones, Toxiproxy, catalog, ratings, recommendations")
        zones = {z: [f"127.0.0.1:{procs.memcached(z)}"] for z in ("a", "b", "c")}
        toxiproxy = ToxiproxyClient(f"http://127.0.0.1:{procs.toxiproxy()}")
        urls = {name: f"http://127.0.0.1:{procs.downstream(name)}"
                for name in ("catalog", "ratings", "recommendations")}  # fmt: skip
        proxy_port = free_port()
        toxiproxy.create_proxy(
            "recommendations", f"127.0.0.1:{proxy_port}", urls["recommendations"][len("http://") :]
        )
        direct_recommendations = urls["recommendations"]
        urls["recommendations"] = f"http://127.0.0.1:{proxy_port}"

        store = flags_path if isinstance(flags_path, EtcdSource) else None
        movies = Movies(urls, zones, workdir / "flags.json", fit_secret=secret, admin_token=token,
                        flag_source=store)  # fmt: skip
        registry().on_state_change(
            lambda c: transitions.append(f"{c.dependency}: {c.old.value} -> {c.new.value}")
        )
        registry().on_state_change(_print_change)
        runner = web.AppRunner(movies.app(), access_log=None)
        await runner.setup()
        port = opts.port or free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        base = f"http://127.0.0.1:{port}"
        dashboard = f"{base}/admin/"
        say(f"movies service on {base}/home/u1   dashboard {dashboard}   admin token {token}")
        summary["dashboard"] = dashboard

        traffic = Traffic(base)
        async with aiohttp.ClientSession() as session:
            traffic.session = session
            pause = opts.pause

            say("\n1. steady traffic (profiles loaded once into every zone)")
            steady = await traffic.burst(len(USERS) * 2)
            line("steady", steady)
            summary["checks"]["steady_all_200"] = steady["ok"] == steady["requests"]
            await asyncio.sleep(pause)

            say("\n2. FIT in production: request-scoped faults, untagged traffic alongside")
            # Let the steady successes age out of the circuits' 2 s window first, so the
            # experiment starts from a quiet moment.
            await asyncio.sleep(2.0)
            untagged: dict[str, dict[str, int]] = {}
            for recipe_file, part in (
                ("ratings-down.yaml", "ratings"),
                ("recommendations-slow.yaml", "recommendations"),
            ):
                recipe = Recipe.load(RECIPES / recipe_file)
                say(f"  recipe {recipe.name}: 40 signed requests, 40 control requests between, "
                    "and 40 untagged page views at the same time")  # fmt: skip
                report, during = await asyncio.gather(
                    fit.run(recipe, f"{base}/home/u1", secret=secret, requests=40,
                            tagged_share=0.5, concurrency=4),
                    traffic.burst(40, concurrency=2),
                )  # fmt: skip
                say(_indent(report.to_text()))
                after = await traffic.burst(40)
                line("untagged, during", during)
                line("untagged, right after", after)
                untagged[recipe.name] = {
                    "during": during["degraded"][part], "after": after["degraded"][part]
                }  # fmt: skip
                say(f"  untagged pages degraded by the experiment: "
                    f"{untagged[recipe.name]['during']} during, "
                    f"{untagged[recipe.name]['after']} after (want 0 and 0)")  # fmt: skip
                summary["checks"][f"fit_{recipe.name.replace('-', '_')}_passed"] = report.passed
                summary["checks"][f"pages_200_during_{recipe.name.replace('-', '_')}"] = (
                    during["ok"] == during["requests"] and after["ok"] == after["requests"]
                )
            summary["untagged_degraded"] = untagged
            summary["checks"]["untagged_not_degraded_by_experiments"] = all(
                n == 0 for counts in untagged.values() for n in counts.values()
            )
            await asyncio.sleep(pause)

            say("\n2b. staging only: the same slowness as a Toxiproxy toxic (a global fault)")
            # A toxic slows every request through the proxy, untagged ones too: the runner
            # refuses it unless told --allow-global-faults, and its report says so.
            report = await fit.run(
                Recipe.load(RECIPES / "recommendations-slow-toxic.yaml"), f"{base}/home/u2",
                secret=secret, requests=12, tagged_share=0.5, concurrency=4, toxiproxy=toxiproxy,
                allow_global_faults=True,
            )  # fmt: skip
            say(_indent(report.to_text()))
            summary["checks"]["toxic_run_says_control_was_affected"] = report.global_faults
            summary["checks"]["toxics_removed"] = not toxiproxy.toxics("recommendations")
            await asyncio.sleep(pause)

            say("\n3. the local cache zone (a) is lost: its memcached is killed")
            loads_before = movies.database.loads
            procs.kill("memcached-a")
            zone_loss = await traffic.burst(len(USERS) * 2)
            line("zone a down", zone_loss)
            misses = movies.database.loads - loads_before
            zone_a = registry().dependency("cache.profile.a").state.value
            say(f"  profile loads from the database while zone a was down: {misses} "
                f"(zone a circuit: {zone_a})")  # fmt: skip
            summary["cache_misses_during_zone_loss"] = misses
            summary["checks"]["zero_cache_misses_during_zone_loss"] = (
                misses == 0 and zone_loss["ok"] == zone_loss["requests"]
            )
            await asyncio.sleep(pause)

            say(f"\n4. kill switch: kill-recommendations turned on in the {opts.flags_store}")
            write_flags(flags_path, kill_recommendations=True)
            took = await _until(lambda: movies.flags.enabled("kill-recommendations"), 10.0)
            calls_before = movies.recommendation_calls
            switched = await traffic.burst(40)
            line("switch on", switched)
            calls = movies.recommendation_calls - calls_before
            say(f"  flag seen after {took * 1000:.0f} ms; recommendations called {calls} times "
                f"since; pages with the switch's answer: "
                f"{switched['degraded']['recommendations_switched_off']}")  # fmt: skip
            summary["checks"]["kill_switch_took_effect"] = (
                calls == 0 and switched["degraded"]["recommendations_switched_off"] == 40
            )
            await asyncio.sleep(pause)

            say("\n5. recovery: zone a restarted, switch off, traffic until every circuit closes")
            procs.memcached("a", port=int(zones["a"][0].rsplit(":", 1)[1]))
            write_flags(flags_path, kill_recommendations=False)
            await _until(lambda: not movies.flags.enabled("kill-recommendations"), 10.0)
            deadline = time.monotonic() + 30
            await traffic.burst(20)
            while time.monotonic() < deadline and any(
                s != State.CLOSED.value for s in circuits().values()
            ):
                await asyncio.sleep(0.5)
                await traffic.burst(20)  # half-open trials need calls to run
            recovery = await traffic.burst(40)
            line("recovered", recovery)
            summary["circuits_at_end"] = circuits()
            summary["checks"]["all_circuits_closed_at_end"] = all(
                s == State.CLOSED.value for s in circuits().values()
            )
            summary["checks"]["recovered_pages_not_degraded"] = (
                recovery["ok"] == recovery["requests"]
                and recovery["degraded"]["ratings"] == 0
                and recovery["degraded"]["recommendations"] == 0
            )

        summary["transitions"] = transitions
        summary["passed"] = all(summary["checks"].values())
        say("\nsummary")
        for name, ok in summary["checks"].items():
            say(f"  {'ok  ' if ok else 'FAIL'} {name.replace('_', ' ')}")
        say(f"  circuits: {', '.join(f'{k} {v}' for k, v in sorted(circuits().items()))}")
        say(f"  dashboard: {dashboard} (admin token {token})")
        if opts.summary_json:
            await asyncio.to_thread(
                Path(opts.summary_json).write_text, json.dumps(summary, indent=2)
            )
        if opts.keep_running:
            say("\n--keep-running: services stay up; Ctrl-C stops them. Recommendations direct: "
                f"{direct_recommendations}; toxiproxy API {toxiproxy.url}")  # fmt: skip
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
        return 0 if summary["passed"] else 1
    finally:
        if runner is not None:
            await runner.cleanup()
        procs.stop_all()
        fit.disable()


def _print_change(change: StateChange) -> None:
    say(f"    circuit {change.dependency}: {change.old.value} -> {change.new.value} "
        f"({change.reason})")  # fmt: skip


def _indent(text: str) -> str:
    return "\n".join("  | " + row for row in text.rstrip().splitlines())


async def _until(check: Any, limit: float) -> float:
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > limit:
            raise TimeoutError("the flags file change was not seen in time")
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Play the movies demo.")
    parser.add_argument("--port", type=int, default=0, help="movies service port (default: free)")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between phases")
    parser.add_argument("--keep-running", action="store_true", help="stay up after the summary")
    parser.add_argument("--summary-json", help="write the summary to this file")
    parser.add_argument("--admin-token", help="the dashboard's admin token (default: random)")
    parser.add_argument("--flags-store", choices=("file", "etcd"), default="file",
                        help="where the flags live: a watched file, or a real etcd")  # fmt: skip
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the listener prints transitions
    try:
        return asyncio.run(play(opts))
    except Missing as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 3
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130


if __name__ == "__main__":
    sys.exit(main())
