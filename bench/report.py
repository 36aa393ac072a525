"""Regenerate the figures table of docs/performance.md from bench/results/*.json.

    python -m bench.report

Only the part between the BEGIN/END markers is rewritten; the rest of the page is prose kept by hand.
"""

from __future__ import annotations

import json
from typing import Any

from bench.common import RESULTS, ROOT

PAGE = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- BEGIN bench/report.py -->", "<!-- END bench/report.py -->"
WORKLOAD_NAMES = {
    "single_16": "single memory, 16 conns",
    "single_64": "single memory, 64 conns",
    "batch100_4": "batches of 100, 4 conns",
}


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _gateway(g: dict[str, Any], targets: list[str]) -> list[str]:
    base = g["baseline"]
    lines = [
        f"### Memory POST (wrk -t2, {g['seconds_per_point']:g} s per point, {g.get('rounds', 1)} interleaved rounds per workload, loopback; generator headroom"
        f" {g['generator_headroom']}x: wrk served a bare ASGI constant at {base['constant_bare_asgi']['rps']} req/s,"
        f" a FastAPI constant at {base['constant_fastapi']['rps']} req/s)",
        "",
        "| variant | database | workload | req/s | memories/s | p50 ms | p99 ms | server CPU ms/req | ratio vs baseline |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for w, label in WORKLOAD_NAMES.items():
        p = base[w]
        lines.append(
            f"| hand-written baseline | sqlite3 | {label} | {p['rps']} | {p['memories_per_s']} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} | {p['server_cpu_ms_per_request']} | 1 |"
        )
    for variant, dbs in g["variants"].items():
        for db, result in dbs.items():
            for w, label in WORKLOAD_NAMES.items():
                p = result[w]
                ratio = g["ratios"][variant][db][w]
                errors = f" ({p['non2xx']} non-2xx)" if p["non2xx"] else ""
                lines.append(
                    f"| {variant} | {db} | {label} | {p['rps']}{errors} | {p['memories_per_s']} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} | {p['server_cpu_ms_per_request']} | {ratio} |"
                )
    project = g["variants"].get("project", {})
    for db, result in project.items():
        r = g["ratios"]["project"][db]
        targets.append(
            f"| single memory ≥ 0.7× baseline, {db} | 16: {r['single_16']}×, 64: {r['single_64']}× | {_mark(min(r['single_16'], r['single_64']) >= 0.7)} |"
        )
        targets.append(
            f"| p99 at 16 conns ≤ 100 ms, {db} | {result['single_16']['p99_ms']:.0f} ms | {_mark(result['single_16']['p99_ms'] <= 100)} |"
        )
        targets.append(
            f"| API peak RSS ≤ 150 MB, {db} | {result['api_peak_rss_mb']} MB | {_mark((result['api_peak_rss_mb'] or 1e9) <= 150)} |"
        )
    if "postgres" in project:
        rate = project["postgres"]["batch100_4"]["memories_per_s"]
        targets.append(
            f"| batches of 100 ≥ 12,000 memories/s, postgres | {rate:,.0f} | {_mark(rate >= 12000)} |"
        )
    return lines


def _e2e_rounds(e2e: dict[str, Any]) -> str:
    """Each round's end-to-end rate against the raw models timed just before it."""
    return ", ".join(f"{r['per_s']}/s vs {r['raw_model_per_s']}/s" for r in e2e["rounds"])


def _raw_rounds(e2e: dict[str, Any]) -> str:
    return " / ".join(f"{r['raw_model_per_s']}/s" for r in e2e["rounds"])


def _queue_row(label: str, side: dict[str, Any], ratio: object) -> str:
    rss = side["worker_rss"]
    return (
        f"| {label} | {side['tasks_per_s']} | {ratio} | {side['worker_cpu_ms_per_task']}"
        f" | {side['client_cpu_ms_per_task']} | {rss['parent_mb']} | {rss['pool_mb']} |"
    )


def _queue(q: dict[str, Any], targets: list[str]) -> list[str]:
    b, p = q["baseline"], q["project"]
    targets.append(f"| queue path ≥ 0.8× bare Celery | {q['ratio']}× | {_mark(q['ratio'] >= 0.8)} |")
    pool = max(p["worker_rss"]["pool_mb"] or [0])
    per_turn, quiet = q["events_flushed_every_turn"], q["without_task_events"]
    return [
        f"### Queue path (echo round trips, {p['tasks']} tasks per side in {q['rounds']} interleaved rounds, {q['pool']}, one private redis-server)",
        "",
        "| side | tasks/s | × bare | worker CPU ms/task | client CPU ms/task | worker parent RSS MB | pool process RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        _queue_row("bare Celery, default settings, no-op task", b, 1),
        _queue_row("project config + base task (`jeffrey.system.echo`), as it runs", p, q["ratio"]),
        _queue_row(
            "the same, task events flushed at every loop turn as stock Celery does (`WORKER_EVENT_FLUSH_SECONDS=0`: before they were batched)",
            per_turn,
            per_turn["ratio"],
        ),
        _queue_row(
            "the same without task events (Flower needs them; shown for their cost)", quiet, quiet["ratio"]
        ),
        "",
        f"Pool process RSS max {pool} MB. CPU per task, bare over project (worker + client): {q['cpu_ratio']};"
        f" events flushed every loop turn {per_turn['cpu_ratio']}; without task events {quiet['cpu_ratio']}.",
    ]


def _pipeline(d: dict[str, Any], targets: list[str]) -> list[str]:
    a, c = d["annotation"], d["consolidation"]
    e2e = a.get("end_to_end")
    if e2e is None:
        targets.append(
            f"| annotation ≥ 0.7× raw models per process | {a['ratio']}× (service, not yet API → worker) | {_mark(a['ratio'] >= 0.7)} |"
        )
    else:
        ratio = a["end_to_end_ratio"]
        targets.append(
            f"| annotation API → worker → row ≥ 0.7× raw models per process | {ratio}× ({_e2e_rounds(e2e)}; the sweep alone {a['ratio']}×) | {_mark(ratio >= 0.7)} |"
        )
    targets.append(
        f"| consolidation of {c['memories']:,} memories (one user) ≤ 10 s | direct {c['direct_seconds']} s, through the broker {c['broker']['seconds']} s | {_mark(c['memories'] >= 10000 and c['broker']['seconds'] <= 10)} |"
    )
    rss = max(c["broker"]["worker_rss"]["pool_mb"] or [0])
    targets.append(
        # Issue 10 raised the issue-12 figure (300 MB) to 450 MB for a worker that loads a text encoder.
        f"| worker pool process RSS ≤ 450 MB with the emotion model and the encoder | {rss} MB | {_mark(0 < rss <= 450)} |"
    )
    return [
        "### Annotation and consolidation",
        "",
        "| measure | baseline | project | ratio |",
        "| --- | ---: | ---: | ---: |",
        f"| annotation, {a['texts']} texts, batch {a['batch']} ({a['encoder']}) | raw models {a['raw_model_per_s']}/s | service sweep {a['service_per_s']}/s | {a['ratio']} |",
        *(
            [
                f"| annotation end to end: {a['end_to_end']['texts']} memories POSTed in batches of 100 to the API, one pool process (-c 1) | raw models, timed right before each round: {_raw_rounds(a['end_to_end'])} | {a['end_to_end']['per_s']}/s; all annotated {a['end_to_end']['lag_after_last_post_s']} s after the last POST at most | {a['end_to_end_ratio']} |"
            ]
            if "end_to_end" in a
            else []
        ),
        f"| consolidation, {c['memories']:,} memories of one user | engine called directly {c['direct_seconds']} s ({c['direct_per_s']}/s) | through the broker {c['broker']['seconds']} s ({c['broker_per_s']}/s) | {c['ratio']} |",
    ]


def _pair(c: dict[str, Any], a: dict[str, Any], key: str) -> str:
    """Consolidation / annotation figures of one column."""
    return f"{c.get(key, '–')} / {a.get(key, '–')}"


def _scale_targets(d: dict[str, Any], targets: list[str]) -> None:
    sizes, rss = d["sizes"], d["rss"]
    if "10000" in sizes and "100000" in sizes:
        ten, big = sizes["10000"]["seconds"], sizes["100000"]["seconds"]
        targets.append(
            f"| 100k over 10 users ≤ 1.3× ten times the 10k figure | {big} s vs 10 × {ten} s: {big / (10 * ten):.2f}× | {_mark(big <= 13 * ten)} |"
        )
    pools = [mb for p in d["processes"].values() for mb in p["worker_rss"]["pool_mb"] if mb]
    targets.append(
        f"| RSS under bench-scale: api ≤ 150 MB, pool process ≤ 450 MB | api {rss['api_mb']} MB, pool max {max(pools, default=0)} MB | {_mark((rss['api_mb'] or 1e9) <= 150 and 0 < max(pools, default=0) <= 450)} |"
    )


def _scale(d: dict[str, Any], targets: list[str]) -> list[str]:
    _scale_targets(d, targets)
    procs = d["processes"]
    first = next(iter(procs.values()), None)
    lines = [
        "### Worker processes (bench.scale: PostgreSQL, one private redis-server; API, beat, Flower up throughout)",
        "",
        f"`make bench-scale` at commit `{d.get('commit')}`, {d.get('when')}, {d.get('wall_seconds')} s; load average at start {d.get('machine', {}).get('load_average_at_start')}.",
        "",
        "| prefork -c | consolidation memories/s | × vs -c 1 | annotation API → worker memories/s | × vs -c 1 | Redis peak ops/s | Redis commands per memory | Redis CPU ms per memory | PG connections at peak | PG CPU ms per memory | pool RSS MB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for k, p in procs.items():
        c, a = p["consolidation"], p["annotation"]
        cx = round(c["memories_per_s"] / first["consolidation"]["memories_per_s"], 2) if first else ""
        ax = round(a["memories_per_s"] / first["annotation"]["memories_per_s"], 2) if first else ""
        lines.append(
            f"| {k} | {c['memories_per_s']} | {cx} | {a['memories_per_s']} | {ax} | {_pair(c, a, 'redis_peak_ops_per_s')} | {_pair(c, a, 'redis_commands_per_memory')} | {_pair(c, a, 'redis_cpu_ms_per_memory')} | {_pair(c, a, 'pg_peak_connections')} | {_pair(c, a, 'pg_cpu_ms_per_memory')} | {p['worker_rss']['pool_mb']} |"
        )
    if first:
        c, a = first["consolidation"], first["annotation"]
        lines += [
            "",
            f"Each Redis and PG column: consolidation / annotation. Consolidation: {c['users']} users × {c['memories'] // c['users']:,} memories per point, their runs sent at once; annotation: {a['memories']:,} memories POSTed in batches of 100.",
        ]
    lines += [
        "",
        "### Consolidation by size (engine called directly, one process, same tables)",
        "",
        "| memories | users | seconds | memories/s | ms per memory, first → last third of the batches |",
        "| ---: | ---: | ---: | ---: | --- |",
    ]
    for n, r in d["sizes"].items():
        runs = r.get("per_user", [r])
        grow = ", ".join(f"{x['first_third_ms_per_memory']} → {x['last_third_ms_per_memory']}" for x in runs)
        lines.append(
            f"| {int(n):,} | {r.get('users', 1)} | {r['seconds']} | {r['memories_per_s']} | {grow} |"
        )
    if "100000" in d["sizes"]:
        lines += ["", f"Seconds per user of the 100k, in order: {d['sizes']['100000']['per_user_seconds']}."]
    return [*lines, "", *_rss_table(d)]


def _rss_table(d: dict[str, Any]) -> list[str]:
    rss = d["rss"]
    lines = ["### Peak RSS under bench-scale (VmHWM)", "", "| process | MB |", "| --- | ---: |"]
    lines += [
        f"| api (one uvicorn process) | {rss['api_mb']} |",
        f"| beat | {rss['beat_mb']} |",
        f"| flower | {rss['flower_mb']} |",
    ]
    for k, p in d["processes"].items():
        w = p["worker_rss"]
        lines.append(f"| worker -c {k}: main process | {w['parent_mb']} |")
        lines.append(
            f"| worker -c {k}: each pool process (models loaded) | {', '.join(str(x) for x in w['pool_mb'])} |"
        )
    return lines


def render() -> str:
    sections: list[str] = []
    targets = ["| target | measured | |", "| --- | --- | --- |"]
    head: dict[str, Any] | None = None
    for name, build in (
        ("gateway", _gateway),
        ("queue", _queue),
        ("pipeline", _pipeline),
        ("scale", _scale),
    ):
        data = _load(name)
        if data is None:
            sections.append(f"_{name}: no result in bench/results/ (run `make bench`)._")
            continue
        head = head or data
        sections += [*build(data, targets), ""]
    m = (head or {}).get("machine", {})
    intro = [
        f"Commit `{(head or {}).get('commit', '?')}`, {(head or {}).get('when', '?')}; machine: {m.get('cpus')} × {m.get('cpu')},"
        f" {m.get('memory_gb')} GB, Python {m.get('python')}, load average at start {m.get('load_average_at_start')}.",
        "",
        "### Targets (issue 12)",
        "",
        *targets,
        "",
    ]
    return "\n".join([BEGIN, "", *intro, *sections, END])


def main() -> None:
    page = PAGE.read_text() if PAGE.exists() else f"# Performance\n\n{BEGIN}\n{END}\n"
    start, end = page.index(BEGIN), page.index(END) + len(END)
    PAGE.write_text(page[:start] + render() + page[end:])
    print(f"wrote {PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
