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
        f"### Memory POST (wrk -t2, {g['seconds_per_point']:g} s per point, loopback; generator headroom"
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


def _queue(q: dict[str, Any], targets: list[str]) -> list[str]:
    b, p = q["baseline"], q["project"]
    targets.append(f"| queue path ≥ 0.8× bare Celery | {q['ratio']}× | {_mark(q['ratio'] >= 0.8)} |")
    pool = max(p["worker_rss"]["pool_mb"] or [0])
    return [
        f"### Queue path (echo round trips, {p['tasks']} tasks, {q['pool']}, one private redis-server)",
        "",
        "| side | tasks/s | worker parent RSS MB | pool process RSS MB |",
        "| --- | ---: | ---: | ---: |",
        f"| bare Celery, default settings, no-op task | {b['tasks_per_s']} | {b['worker_rss']['parent_mb']} | {b['worker_rss']['pool_mb']} |",
        f"| project config + base task (`jeffrey.system.echo`) | {p['tasks_per_s']} | {p['worker_rss']['parent_mb']} | {p['worker_rss']['pool_mb']} |",
        f"| ratio | {q['ratio']} | | max {pool} |",
    ]


def _pipeline(d: dict[str, Any], targets: list[str]) -> list[str]:
    a, c = d["annotation"], d["consolidation"]
    targets.append(
        f"| annotation ≥ 0.7× raw models per process | {a['ratio']}× (service, not yet API → worker) | {_mark(a['ratio'] >= 0.7)} |"
    )
    targets.append(
        f"| consolidation of {c['memories']:,} memories (one user) ≤ 10 s | direct {c['direct_seconds']} s, through the broker {c['broker']['seconds']} s | {_mark(c['memories'] >= 10000 and c['broker']['seconds'] <= 10)} |"
    )
    rss = max(c["broker"]["worker_rss"]["pool_mb"] or [0])
    targets.append(
        f"| worker pool process RSS ≤ 300 MB with the models | {rss} MB | {_mark(0 < rss <= 300)} |"
    )
    return [
        "### Annotation and consolidation",
        "",
        "| measure | baseline | project | ratio |",
        "| --- | ---: | ---: | ---: |",
        f"| annotation, {a['texts']} texts, batch {a['batch']} ({a['encoder']}) | raw models {a['raw_model_per_s']}/s | service sweep {a['service_per_s']}/s | {a['ratio']} |",
        f"| consolidation, {c['memories']:,} memories of one user | engine called directly {c['direct_seconds']} s ({c['direct_per_s']}/s) | through the broker {c['broker']['seconds']} s ({c['broker_per_s']}/s) | {c['ratio']} |",
    ]


def render() -> str:
    sections: list[str] = []
    targets = ["| target | measured | |", "| --- | --- | --- |"]
    head: dict[str, Any] | None = None
    for name, build in (("gateway", _gateway), ("queue", _queue), ("pipeline", _pipeline)):
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
