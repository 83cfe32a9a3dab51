"""The report as text tables (the JSON form is the report itself); each target's ✓/✗ is informational."""

from __future__ import annotations

from typing import Any

SKIPPED = (
    "(Cross-replica cancel and relay with N workers need PostgreSQL: run with --database postgresql://… "
    "on a scratch database.)"
)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    return [line(header), *(line(r) for r in rows)]


def _mark(ok: bool | None) -> str:
    return "" if ok is None else ("✓" if ok else "✗")


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render(report: dict[str, Any]) -> str:
    """A full run's report (setup, TTFT, relay, stops, proxy process, micro-benchmarks)."""
    ok = {c["figure"]: c["ok"] for c in report["checks"]}
    s = report["setup"]
    out = [
        f"lmstudio-proxy bench against {s['lmstudio']} (model {s['model']}); {s['cpus']} CPUs, "
        f"load average {s['load_average_before']} before, {s['load_average_after']} after; {s['seconds']} s",
        f"warm-up: {s['warm_up']}",
        "",
    ]
    out += _ttft(report["ttft"], ok)
    out += ["", *_relay(report["relay"], s["tokens_per_stream"], s["relay_seconds"], ok)]
    out += ["", *_stops(report["cancel"], report["disconnect"], ok)]
    if report.get("saturation") is not None:
        out += ["", *_saturation(report["saturation"], ok)]
    out += ["", *_process(report["proxy_process"], ok)]
    out += ["", *_micro(report["micro"], ok)]
    if report.get("replicas") is not None:
        out += ["", *_replicas(report["replicas"])]
    if report.get("workers") is not None:
        out += ["", *_workers(report["workers"])]
    if report.get("replicas") is None and report.get("workers") is None:
        out += ["", SKIPPED]
    if report["disconnect"] is None:
        out += ["", "(LM Studio-side cancel and disconnect timings need the simulator: run with --simulate.)"]
    return "\n".join(out)


def render_micro(report: dict[str, Any]) -> str:
    """A `--micro` run's report."""
    return "\n".join(_micro(report["micro"], {c["figure"]: c["ok"] for c in report["checks"]}))


def _ttft(ttft: dict[str, Any], ok: dict[str, bool]) -> list[str]:
    out = [
        f"Time to first token (ms; {ttft['direct']['samples']} samples each way, interleaved; through the proxy "
        "with a minimal HTTP client, which shows the proxy's own overhead, and with httpx)"
    ]
    rows = []
    for q, limit in (("p50", "<= 0.5 ms"), ("p99", "<= 3 ms")):
        key = f"{q}_ms"
        d = ttft["direct"][key]
        p, o = ttft["proxy_raw_client"][key], ttft["overhead_raw_client"][key]
        rows.append([q, "raw client", f"{d:.2f}", f"{p:.2f}", f"{o:+.2f}", limit, _mark(ok[f"TTFT overhead {q} (ms)"])])
        p, o = ttft["proxy"][key], ttft["overhead"][key]
        httpx_target = ("<= 3 ms", _mark(ok["TTFT overhead p50 with httpx (ms)"])) if q == "p50" else ("", "")
        rows.append([q, "httpx", f"{d:.2f}", f"{p:.2f}", f"{o:+.2f}", *httpx_target])
        p, o = ttft["bare_relay"][key], ttft["overhead_bare_relay"][key]
        rows.append([q, "raw client, bare relay", f"{d:.2f}", f"{p:.2f}", f"{o:+.2f}", "", ""])
    out += _table(["", "client", "direct", "proxy", "overhead", "target", ""], rows)
    own = ttft["proxy_own"]
    out.append(
        f"the proxy's own part (its X-Proxy-Overhead-Ms: before LM Studio was asked, and from LM Studio's first "
        f"fragment to the headers): p50 {own['p50_ms']:.2f} ms, p99 {own['p99_ms']:.2f} ms"
    )
    floor, above = ttft["floor"], ttft["overhead_above_floor"]
    out.append(
        f"the machine's floor (the two hops any proxy adds: a request to a do-nothing server in its own process, "
        f"after the same {floor['idle_ms']:.2f} ms idle wait): p50 {floor['p50_ms']:.2f} ms, p99 {floor['p99_ms']:.2f} "
        f"ms; the overhead above it: p50 {above['p50_ms']:+.2f} ms, p99 {above['p99_ms']:+.2f} ms"
    )
    above = ttft["overhead_above_bare_relay"]
    out.append(
        "the bare relay (the proxy's server and SDK doing nothing else: what any proxy made of them adds here); "
        f"the proxy's overhead above it: p50 {above['p50_ms']:+.2f} ms, p99 {above['p99_ms']:+.2f} ms"
    )
    cpu = ttft["cpu_ms_per_request"]
    out.append(
        f"CPU per request ({ttft['direct']['samples']} samples each): the proxy {cpu['proxy']:.2f} ms, the bare relay "
        f"{cpu['bare_relay']:.2f} ms, the direct SDK client {cpu['direct_client']:.2f} ms (this process)"
    )
    g = ttft["static_get"]
    out.append(
        f"httpx's own cost: GET {g['path']} takes {g['httpx']['p50_ms']:.2f} ms with httpx and "
        f"{g['raw_client']['p50_ms']:.2f} ms with the minimal client (p50, {g['httpx']['samples']} each)"
    )
    return out


def _relay(relay: list[dict[str, Any]], tokens: int, seconds: float, ok: dict[str, bool]) -> list[str]:
    out = [
        f"Relay throughput (tokens/s received by all clients together; {tokens} tokens a stream; direct and proxy "
        f"batches in turn, at least {seconds:g} s a side; through the proxy "
        "with the minimal HTTP client; CPU µs per token of the direct SDK client (this process), of the proxy, "
        "the proxy's own share (the difference), and of the minimal client reading the proxy's streams)"
    ]
    rows = []
    failures: list[str] = []
    for r in relay:
        figure = f"relay at {r['streams']} stream(s), proxy/direct"
        target = {1: ">= 90 %", 32: ">= 80 %", 128: ">= 80 %"}.get(r["streams"], "")
        direct_cpu = _us(r["direct"]["client_cpu_us_per_token"])
        if r["proxy"] is None:
            proxy_cells = ["failed", "-", target, _mark(ok.get(figure)), direct_cpu, "-", "-", "-", "-"]
            failures.append(f"  {r['streams']} stream(s) through the proxy failed: {r['proxy_error']}")
        else:
            proxy_cells = [f"{r['proxy']['tokens_per_second']:,}", f"{r['ratio']:.0%}", target, _mark(ok.get(figure))]
            proxy_cells += [direct_cpu, _us(r["proxy_cpu_us_per_token"]), _us(r["proxy_own_cpu_us_per_token"])]
            proxy_cells += [f"{r['proxy_cpu_busy']:.0%}", _us(r["proxy"]["client_cpu_us_per_token"])]
        rows.append([str(r["streams"]), str(r["rounds"]), f"{r['direct']['tokens_per_second']:,}", *proxy_cells])
    header = ["streams", "rounds", "direct tok/s", "proxy tok/s", "proxy/direct", "target", ""]
    header += ["direct CPU µs/tok", "proxy CPU µs/tok", "own µs/tok", "busy", "client µs/tok"]
    return [*out, *_table(header, rows), *failures]


def _stops(c: dict[str, Any], disconnect: dict[str, Any] | None, ok: dict[str, bool]) -> list[str]:
    pace = " at 200 tokens/s" if disconnect is not None else " as LM Studio runs"
    out = [
        f"Cancel and disconnect latency (ms, from the client's action; generation{pace}; the minimal HTTP "
        "client sends the cancel and closes the connection)"
    ]
    rows = []
    if c["to_lmstudio"] is not None:
        v = c["to_lmstudio"]
        rows.append(["cancel sent -> LM Studio receives cancel", f"{v['p50_ms']:.2f}", f"{v['p99_ms']:.2f}"])
        rows[-1] += [str(v["samples"]), "p50 <= 2, p99 <= 5"]
        rows[-1] += [_mark(ok["cancel -> LM Studio p50 (ms)"] and ok["cancel -> LM Studio p99 (ms)"])]
    for label, key in (
        ("cancel sent -> cancel answered", "answered"),
        ("cancel sent -> response.cancelled", "cancelled_event"),
    ):
        rows.append([label, f"{c[key]['p50_ms']:.2f}", f"{c[key]['p99_ms']:.2f}", str(c[key]["samples"]), "", ""])
    if disconnect is not None:
        v = disconnect["to_lmstudio"]
        rows.append(["SSE closed -> LM Studio receives cancel", f"{v['p50_ms']:.2f}", f"{v['p99_ms']:.2f}"])
        rows[-1] += [str(v["samples"]), "p99 <= 5", _mark(ok["disconnect -> LM Studio p99 (ms)"])]
    out += _table(["", "p50", "p99", "samples", "target", ""], rows)
    for phase, result in (("cancel", c), ("disconnect", disconnect)):
        if result is not None and result["error"]:
            out.append(f"  {phase} samples stopped early, {result['error']}")
    return out


def _saturation(sat: dict[str, Any], ok: dict[str, bool]) -> list[str]:
    out = [
        f"Saturation ({sat['streams']} streams at {sat['tokens_per_second']:g} tokens/s each; {sat['cancels']} of "
        "them cancelled, one every 20 ms, while the others stream; ms from the client's cancel)"
    ]
    a = sat["answered"]
    rows = [["cancel sent -> cancel answered", f"{a['p50_ms']:.2f}", f"{a['p99_ms']:.2f}", str(a["samples"])]]
    rows[-1] += ["p99 <= 1000", _mark(ok["saturation: cancel answered p99 (ms)"])]
    if (v := sat["to_lmstudio"]) is not None:
        rows.append(["cancel sent -> LM Studio receives cancel", f"{v['p50_ms']:.2f}", f"{v['p99_ms']:.2f}"])
        rows[-1] += [str(v["samples"]), "", ""]
    out += _table(["", "p50", "p99", "samples", "target", ""], rows)
    out.append(
        f"  store matches the cancel's body: {sat['store_matches']} of {sat['cancels']} cancelled streams "
        f"{_mark(ok['saturation: store matches every cancel'])}"
    )
    out += [f"  {m}" for m in sat["mismatches"]]
    return out


def _process(p: dict[str, Any], ok: dict[str, bool]) -> list[str]:
    own = p["own_cpu_us_per_token"]
    own_mark = _mark(ok.get("proxy's own CPU per token (µs)"))
    return [
        "Proxy process",
        f"  CPU per relayed token   {p['cpu_us_per_token']} µs  ({p['cpu_seconds']} CPU s / "
        f"{p['tokens_relayed']:,} tokens over the proxy's relay runs)",
        f"  direct client CPU/token {p['direct_client_cpu_us_per_token']} µs  (this process, the lmstudio SDK "
        "alone, over the direct relay runs)",
        f"  proxy's own share       {own} µs  (proxy CPU per token - direct client CPU per token)   "
        f"target <= 30 µs {own_mark}",
        f"  RSS idle                {p['rss_idle_mb']} MB",
        f"  RSS per active stream   {p['rss_per_stream_kb']} KB  ({p['active_streams']} streams mid-generation: "
        f"{p['rss_active_mb']} MB)   target <= 50 KB {_mark(ok['RSS per active stream (KB)'])}",
    ]


def _micro(m: dict[str, Any], ok: dict[str, bool]) -> list[str]:
    d, f, i = m["decode_create"], m["sse_frame"], m["import_cli"]
    out = [
        f"Micro-benchmarks (µs per call: median and best of {d['repeats']} timeit repeats; import: best of "
        f"{i['runs']} fresh interpreters)"
    ]
    rows = [
        [
            f"request parse: wire.decode_create ({d['body_bytes']} B body)",
            f"{d['us_per_call']:.2f} µs (best {d['best_us']:.2f})",
            "<= 5 µs",
        ],
        [
            f"SSE frame: sse.frame (content delta, {f['frame_bytes']} B)",
            f"{f['us_per_call']:.2f} µs (best {f['best_us']:.2f})",
            "<= 0.5 µs",
        ],
        [f"{i['statement']}, above the bare interpreter", f"{i['above_interpreter_seconds']:.3f} s", "<= 0.3 s"],
    ]
    figures = (
        "request parse, decode_create (µs)",
        "SSE frame encode (µs)",
        "import proxy.cli above interpreter start (s)",
    )
    rows = [[*row, _mark(ok[figure])] for row, figure in zip(rows, figures, strict=True)]
    out += _table(["", "value", "target", ""], rows)
    out.append(f"  ({i['statement']}: {i['seconds']:.3f} s; python -c pass: {i['interpreter_seconds']:.3f} s)")
    return out


def _replicas(r: dict[str, Any]) -> list[str]:
    out = [
        f"Cross-replica cancel (ms, from the client's cancel; two replicas on PostgreSQL, the stream on A; "
        f"{r['samples']} cancels each way, alternated; sent with the minimal HTTP client)"
    ]
    rows = []
    for route, label in (("cross", "cancel to B (other replica)"), ("same", "cancel to A (stream's replica)")):
        v = r[route]
        for what, figures in (("LM Studio receives cancel", v["to_lmstudio"]), ("cancel answered", v["answered"])):
            if figures is not None:
                cells = [f"{figures['p50_ms']:.2f}", f"{figures['p99_ms']:.2f}", str(figures["samples"])]
                rows.append([f"{label}: sent -> {what}", *cells])
    out += _table(["", "p50", "p99", "samples"], rows)
    out.append(
        f"  store matches the cancel's body: {r['store_matches']} of {r['cancels']} cancels "
        f"{_mark(r['store_matches'] == r['cancels'])} (modes: "
        + ", ".join(f"{mode} {n}" for mode, n in sorted(r["modes"].items()))
        + ")"
    )
    out += [f"  {m}" for m in r["mismatches"]]
    if r["error"]:
        out.append(f"  cross-replica cancel stopped {r['error']}")
    return out


def _workers(w: dict[str, Any]) -> list[str]:
    out = [
        f"Relay with {w['workers']} workers against one process (tokens/s received by all clients together; "
        f"{w['tokens_per_stream']} tokens a stream; both on PostgreSQL; batches alternated; minimal HTTP client)"
    ]
    rows, failures = [], []
    for row in w["rows"]:
        if row["error"] is not None:
            rows.append([str(row["streams"]), "-", "failed", "failed", "-"])
            failures.append(f"  {row['streams']} stream(s) failed {row['error']}")
            continue
        one, workers = row["one"]["tokens_per_second"], row["workers"]["tokens_per_second"]
        rows.append([str(row["streams"]), str(row["rounds"]), f"{one:,}", f"{workers:,}", f"{row['ratio']:.2f}"])
    header = ["streams", "rounds", "1 process tok/s", f"{w['workers']} workers tok/s", "workers/one"]
    return [*out, *_table(header, rows), *failures]
