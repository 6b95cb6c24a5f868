#!/usr/bin/env python3
"""Helper for benches/run (Python 3.11 stdlib only).

  wrkrun.py port
      print a loopback TCP port that was free a moment ago
  wrkrun.py json-field FIELD < json
      print one top-level string field of a JSON object on stdin
  wrkrun.py measure --name NAME [--key KEY] --out FILE [--pid LABEL=PID[,PID] ...]
                    [--rss-pid PID] -- wrk ARGS...
      run wrk, fail unless every response was 2xx/3xx and there were no
      socket errors, sample the CPU time the given processes (and wrk
      itself) used during the run (and the peak VmRSS of --rss-pid),
      append one JSON line to FILE
  wrkrun.py table FILE
      print the markdown results table (and the CPU table) for FILE; with
      several runs per target, each row is the run with the median req/s
  wrkrun.py quiet MAX_SECONDS
      wait (at most MAX_SECONDS) until the whole machine used less than 15%
      of one core over a second; print that last figure
  wrkrun.py rss PID
      print VmRSS of PID in kB
  wrkrun.py conns --port P --count N --pid PID [--path P] [--header H ...]
      open N keep-alive connections to 127.0.0.1:P, send one GET on each
      and read its answer, keep them all open; print one JSON line with
      PID's VmRSS before, with all N open, and after closing them
  wrkrun.py coldstart --url URL --runs N [--env K=V ...] [--label L] -- COMMAND...
      N times: start COMMAND, time until GET URL answers 200, stop it;
      print one JSON line (every time and the median, in ms); `{port}` in
      the URL, the command and the --env values is a fresh free port
  wrkrun.py cookie-size --secret S [--check URL]
      mint Auth.js session cookies (tests/fixtures/authjs/jwt.mjs) for a
      typical OIDC user with 10 groups, with and without provider tokens;
      print one JSON line with their sizes (--check: GET URL/auth/session
      with each and require the user's e-mail back)
  wrkrun.py redis-stats KEY RUN_JSON < (redis-cli info commandstats)
      print one JSON line with the calls per Redis command during RUN_JSON
  wrkrun.py report --results FILE --extras FILE [--meta K=V ...]
      print the full markdown report (targets with PASS/FAIL first)
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # comm may contain spaces: fields start after the last ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest is inside user)
    total = sum(v[:8])
    return (total - v[3] - v[4]) / TICKS, total / TICKS


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def to_ms(v: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", v.strip())
    if not m:
        raise ValueError(f"unparsable wrk duration {v!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(out: str) -> dict:
    r: dict = {}
    m = re.search(r"^Requests/sec:\s+([0-9.]+)", out, re.M)
    if not m:
        raise ValueError("no Requests/sec line in wrk output")
    r["rps"] = float(m.group(1))
    m = re.search(r"^\s*(\d+) requests in ([0-9.]+\w+)", out, re.M)
    r["requests"] = int(m.group(1)) if m else 0
    for p in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{p}%\s+(\S+)", out, re.M)
        if not m:
            raise ValueError(f"no {p}% latency line (was --latency given?)")
        r[f"p{p}_ms"] = to_ms(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    r["socket_errors"] = sum(map(int, m.groups())) if m else 0
    return r


def measure(argv: list[str]) -> int:
    name, key, out_file, pids, rss_pid = None, None, None, [], None
    i = 0
    while i < len(argv) and argv[i] != "--":
        if argv[i] == "--name":
            name = argv[i + 1]
            i += 2
        elif argv[i] == "--key":
            key = argv[i + 1]
            i += 2
        elif argv[i] == "--rss-pid":
            rss_pid = int(argv[i + 1])
            i += 2
        elif argv[i] == "--out":
            out_file = argv[i + 1]
            i += 2
        elif argv[i] == "--pid":  # LABEL=PID[,PID...]: their CPU is summed
            label, pid = argv[i + 1].split("=", 1)
            pids.append((label, [int(p) for p in pid.split(",")]))
            i += 2
        else:
            sys.exit(f"measure: unknown argument {argv[i]!r}")
    cmd = argv[i + 1 :]
    if not name or not cmd:
        sys.exit("measure: --name and a wrk command after -- are required")

    def cpu_of(ps: list[int]) -> float | None:
        vs = [cpu_seconds(p) for p in ps]
        return None if None in vs else sum(vs)

    before = {label: cpu_of(ps) for label, ps in pids}
    busy0, _ = machine_busy()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(signum, _frame):  # the bench script is cleaning up: stop wrk too
        proc.terminate()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    rss_peak = [0]
    sampler = None
    if rss_pid is not None:
        done = threading.Event()

        def sample():
            while not done.wait(0.1):
                v = rss_kb(rss_pid)
                if v is not None and v > rss_peak[0]:
                    rss_peak[0] = v

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    out = proc.communicate()[0]
    if sampler is not None:
        done.set()
        sampler.join()
    wall = time.monotonic() - t0
    after = {label: cpu_of(ps) for label, ps in pids}
    busy1, _ = machine_busy()
    # wrk's own CPU: our children's rusage (wrk is the only child we waited for)
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = ru.ru_utime + ru.ru_stime

    if proc.returncode != 0:
        sys.stderr.write(out)
        sys.exit(f"FAIL [{name}]: wrk exited with {proc.returncode}")
    try:
        r = parse_wrk(out)
    except ValueError as e:
        sys.stderr.write(out)
        sys.exit(f"FAIL [{name}]: {e}")
    if r["non2xx"] or r["socket_errors"] or r["requests"] == 0:
        sys.stderr.write(out)
        sys.exit(
            f"FAIL [{name}]: {r['non2xx']} non-2xx/3xx responses, "
            f"{r['socket_errors']} socket errors, {r['requests']} requests"
        )
    cpu = {"wrk": 100.0 * wrk_cpu / wall}
    for label, _ in pids:
        if before[label] is not None and after[label] is not None:
            cpu[label] = 100.0 * (after[label] - before[label]) / wall
    # whatever else ran on the machine (other builds, kernel threads, ...)
    cpu["rest of machine"] = max(0.0, 100.0 * (busy1 - busy0) / wall - sum(cpu.values()))
    r.update(name=name, key=key or name, wall_s=wall, cpu_pct=cpu)
    if rss_pid is not None:
        r["rss_peak_kb"] = rss_peak[0]
    if out_file:
        with open(out_file, "a") as f:
            f.write(json.dumps(r) + "\n")
    return 0


def fmt_ms(v: float) -> str:
    return f"{v:.3f} ms" if v < 10 else f"{v:.1f} ms"


def median_rows(runs: list[dict]) -> tuple[list[dict], dict, int]:
    """Per target (in first-seen order) the run with the median req/s, the
    req/s range over the rounds, and the number of rounds."""
    by_key: dict[str, list] = {}
    for r in runs:
        by_key.setdefault(r.get("key", r["name"]), []).append(r)
    rows, spread = [], {}
    for key, rs in by_key.items():
        rs = sorted(rs, key=lambda r: r["rps"])
        rows.append(rs[(len(rs) - 1) // 2])
        spread[key] = f"{rs[0]['rps']:,.0f}–{rs[-1]['rps']:,.0f}"
    return rows, spread, max(len(rs) for rs in by_key.values())


def load_runs(path: str, allow_empty: bool = False) -> list[dict]:
    runs = [json.loads(l) for l in open(path) if l.strip()]
    if not runs and not allow_empty:
        sys.exit("table: no results")
    return runs


def table_text(runs: list[dict], ratios: bool = True) -> str:
    rows, spread, rounds = median_rows(runs)
    direct = rows[0]["rps"]
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.get("key", r["name"])] = counts.get(r.get("key", r["name"]), 0) + 1
    extra_h, extra_a = ("", "") if rounds == 1 else (" runs | req/s range |", "---:|---:|")
    out = [
        f"| target | req/s | p50 | p99 | ratio to {rows[0]['name']} |" + extra_h,
        "|---|---:|---:|---:|---:|" + extra_a,
    ]
    for r in rows:
        key = r.get("key", r["name"])
        out.append(
            f"| {r['name']} | {r['rps']:,.0f} | {fmt_ms(r['p50_ms'])} | "
            f"{fmt_ms(r['p99_ms'])} | {r['rps'] / direct:.3f} |"
            + ("" if rounds == 1 else f" {counts[key]} | {spread[key]} |")
        )
    if ratios:
        out.append("")
        for r in rows[1:]:
            out.append(f"- {r['name']} / {rows[0]['name']}: {r['rps'] / direct:.2f}")
    if rounds > 1:
        out += ["", "(a target measured several times, interleaved with the others: the run "
                "with the median req/s, and the range)"]
    labels = []
    for r in rows:
        for k in r["cpu_pct"]:
            if k not in labels:
                labels.append(k)
    labels.sort(key=lambda k: k == "rest of machine")  # last
    ncpu = os.cpu_count() or 1
    out += [
        "",
        "CPU during each measurement (% of one core, from /proc; the machine has "
        f"{ncpu} cores = {100 * ncpu}%), and CPU time "
        "per request served; \"rest of machine\" is every other process plus "
        "interrupt time:",
        "",
        "| target | " + " | ".join(labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    for r in rows:
        cells = []
        for k in labels:
            pct = r["cpu_pct"].get(k)
            if pct is None:
                cells.append("-")
            elif k == "rest of machine" or pct < 1:
                cells.append(f"{pct:.0f}%")
            else:  # CPU time this party spent per request served
                cells.append(f"{pct:.0f}% ({pct * 1e4 / r['rps']:.1f} µs/req)")
        out.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    busy = [r for r in rows if r["cpu_pct"].get("rest of machine", 0) > 20]
    if busy:
        out += [
            "",
            "WARNING: other processes used more than 20% CPU during "
            + ", ".join(r["name"] for r in busy)
            + ": those figures are depressed; run again on a quiet machine.",
        ]
    return "\n".join(out)


def table(path: str) -> int:
    print(table_text(load_runs(path)))
    return 0


# ------------------------------------------------------------------ memory


def rss_kb(pid: int) -> int | None:
    """VmRSS of a process in kB (KiB), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def opts(argv: list[str], spec: dict[str, str]) -> tuple[dict, list[str]]:
    """--name value options (spec: name -> 'one' | 'many' | 'flag') up to
    an optional '--'; returns (options, the rest after '--')."""
    o: dict = {k: ([] if v == "many" else None) for k, v in spec.items()}
    i = 0
    while i < len(argv) and argv[i] != "--":
        k = argv[i].removeprefix("--")
        if not argv[i].startswith("--") or k not in spec:
            sys.exit(f"unknown argument {argv[i]!r}")
        if spec[k] == "flag":
            o[k] = True
            i += 1
            continue
        if i + 1 >= len(argv):
            sys.exit(f"{argv[i]} needs a value")
        if spec[k] == "many":
            o[k].append(argv[i + 1])
        else:
            o[k] = argv[i + 1]
        i += 2
    return o, argv[i + 1 :]


def read_response(s: socket.socket) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length (or none: empty body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise OSError("connection closed before the response head")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for l in lines[1:]:
        k, _, v = l.partition(":")
        if k.strip().lower() == "content-length":
            length = int(v.strip())
        elif k.strip().lower() == "transfer-encoding":
            raise OSError("chunked response: ask for a path with a fixed length")
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise OSError("connection closed in the response body")
        body += chunk
    return status, body


def is_open(s: socket.socket) -> bool:
    s.setblocking(False)  # a socket with a timeout would wait for data first
    try:
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True  # nothing to read, still connected
    except OSError:
        return False


def conns(argv: list[str]) -> int:
    o, _ = opts(argv, {"port": "one", "count": "one", "pid": "one", "path": "one",
                       "header": "many", "hold": "one"})
    port, count, pid = int(o["port"]), int(o["count"]), int(o["pid"])
    hold = float(o["hold"] or 2)
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 64:
        want = min(hard, max(count + 1024, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        if want < count + 64:
            sys.exit(f"conns: open-file limit {hard} is too low for {count} connections")
    req = (f"GET {o['path'] or '/healthz'} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
           + "".join(h + "\r\n" for h in o["header"]) + "\r\n").encode()
    before = rss_kb(pid)
    socks: list[socket.socket] = []
    result: dict = {"kind": "conns", "count": count, "rss_before_kb": before}
    t0 = time.monotonic()
    try:
        for i in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(s)
            s.sendall(req)
            status, body = read_response(s)
            if status != 200:
                sys.exit(f"conns: connection {i}: HTTP {status} {body[:200]!r}")
        result["open_s"] = time.monotonic() - t0
        peak, deadline = 0, time.monotonic() + hold
        while True:
            v = rss_kb(pid)
            if v is None:
                sys.exit("conns: the server process is gone")
            peak = max(peak, v)
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        result["rss_open_kb"] = peak
        result["still_open"] = sum(is_open(s) for s in socks)
        result["held_s"] = time.monotonic() - t0
    except OSError as e:
        sys.exit(f"conns: after {len(socks)} connections: {e}")
    finally:
        for s in socks:
            s.close()
    time.sleep(2)
    result["rss_after_close_kb"] = rss_kb(pid)
    print(json.dumps(result))
    return 0


# ------------------------------------------------------------------ cold start


def coldstart(argv: list[str]) -> int:
    """`{port}` in the URL and the command is replaced by a fresh free port
    at every start."""
    o, cmd = opts(argv, {"url": "one", "runs": "one", "label": "one", "log": "one", "env": "many"})
    if not o["url"] or not cmd:
        sys.exit("coldstart: --url and a command after -- are required")
    runs = int(o["runs"] or 5)
    log = open(o["log"] or os.devnull, "ab")
    current: list[subprocess.Popen] = []

    def stop(signum, _frame):
        for p in current:
            p.kill()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    times = []
    for _ in range(runs):
        port = free_port()
        url = o["url"].replace("{port}", str(port))
        m = re.fullmatch(r"http://127\.0\.0\.1:(\d+)(/.*)", url)
        if not m:
            sys.exit(f"coldstart: {url}: expected http://127.0.0.1:PORT/PATH")
        req = f"GET {m.group(2)} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
        argv_ = [a.replace("{port}", str(port)) for a in cmd]
        env = dict(os.environ)
        for kv in o["env"]:
            k, _, v = kv.partition("=")
            env[k] = v.replace("{port}", str(port))
        t0 = time.monotonic()
        p = subprocess.Popen(argv_, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        current[:] = [p]
        ok = False
        try:
            while time.monotonic() - t0 < 30:
                if p.poll() is not None:
                    sys.exit(f"coldstart: {' '.join(argv_)} exited with {p.returncode}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                        s.sendall(req)
                        status, _ = read_response(s)
                    if status == 200:
                        ok = True
                        break
                except OSError:
                    pass
                time.sleep(0.0005)
            elapsed = time.monotonic() - t0
        finally:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            current.clear()
        if not ok:
            sys.exit(f"coldstart: no 200 from {url} within 30 s")
        times.append(1000 * elapsed)
    srt = sorted(times)
    print(json.dumps({"kind": "coldstart", "label": o["label"] or " ".join(cmd),
                      "times_ms": times, "median_ms": srt[(len(srt) - 1) // 2]}))
    return 0


# ------------------------------------------------------------------ cookie size


def b64url(n: int) -> str:
    """n characters of base64url text (content does not matter: the
    session is encrypted, not compressed)."""
    import base64

    return base64.urlsafe_b64encode(os.urandom(n)).decode().rstrip("=")[:n]


VARIANTS = ("store_tokens on, with the ID token", "store_tokens on, without the ID token",
            "store_tokens off")


def cookie_size(argv: list[str]) -> int:
    o, _ = opts(argv, {"secret": "one", "check": "one", "fixture": "one"})
    import base64
    import urllib.request

    fixture = o["fixture"] or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "authjs", "jwt.mjs")
    now = int(time.time())

    def enc(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).decode().rstrip("=")

    # an RS256 ID token of 800 characters: header.payload.signature
    header = enc({"alg": "RS256", "typ": "JWT", "kid": "corp-signing-2025"})
    signature = b64url(342)  # 256-byte RSA signature
    payload = b64url(800 - len(header) - len(signature) - 2)
    id_token = f"{header}.{payload}.{signature}"
    assert len(id_token) == 800
    profile = {
        "name": "Alexandra Hamilton-Reyes",
        "email": "alexandra.hamilton-reyes@corp.example.com",
        "picture": "https://lh3.googleusercontent.com/a/ACg8ocJ" + b64url(60) + "=s96-c",
        "sub": "00u8f3k2a9ZxQ4mT5d7",  # an Okta-style subject
        "groups": [f"engineering-team-{n}" for n in range(1, 11)],
        "provider": "corp",
    }
    tokens = {  # as Portcullis keeps them (store_tokens: true)
        "access_token": b64url(40),
        "refresh_token": b64url(40),
        "id_token": id_token,
        "expires_at": now + 3600,
        "refresh_at": now + 3540,
    }
    result: dict = {"kind": "cookie", "claims_json_bytes": {}}
    no_id = {k: v for k, v in tokens.items() if k != "id_token"}
    for variant, claims in ((VARIANTS[0], {**profile, **tokens}), (VARIANTS[1], {**profile, **no_id}),
                            (VARIANTS[2], profile)):
        inp = json.dumps({"op": "encode", "secret": o["secret"], "salt": "authjs.session-token",
                          "token": claims})
        p = subprocess.run(["node", fixture], input=inp, capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            sys.exit(f"cookie-size: jwt.mjs failed: {p.stderr.strip()}")
        value = p.stdout.strip()
        pair = f"authjs.session-token={value}"
        result[variant] = {"value_bytes": len(value), "cookie_bytes": len(pair),
                           "chunks": -(-len(value) // 3936)}
        result["claims_json_bytes"][variant] = len(json.dumps(claims, separators=(",", ":")))
        if o["check"]:
            r = urllib.request.Request(o["check"].rstrip("/") + "/auth/session",
                                       headers={"Cookie": pair})
            with urllib.request.urlopen(r, timeout=5) as resp:
                body = resp.read().decode()
            if profile["email"] not in body:
                sys.exit(f"cookie-size: Portcullis did not accept the minted cookie ({variant}): {body[:300]}")
            result[variant]["accepted_by_portcullis"] = True
    print(json.dumps(result))
    return 0


# ------------------------------------------------------------------ report


def mb(kb: float | None) -> str:
    return "?" if kb is None else f"{kb * 1024 / 1e6:.1f} MB"


def verdict(ok: bool) -> str:
    return "**PASS**" if ok else "**FAIL**"


def report(argv: list[str]) -> int:
    o, _ = opts(argv, {"results": "one", "extras": "one", "meta": "many"})
    extras = [json.loads(l) for l in open(o["extras"]) if l.strip()] if o["extras"] else []
    # Only extras (e.g. BENCH_TARGETS=conns) is a report too.
    runs = load_runs(o["results"], allow_empty=bool(extras))
    meta = dict(m.split("=", 1) for m in o["meta"])
    rows, _, rounds = median_rows(runs) if runs else ([], {}, 0)
    by = {r.get("key", r["name"]): r for r in rows}
    ex: dict = {}
    for e in extras:
        ex.setdefault(e["kind"], []).append(e)

    out = ["# Portcullis benchmark", ""]
    # ---- targets first
    out += ["## Targets", "", "| target | measured | goal | result |", "|---|---:|---:|:---:|"]
    fa, fadb, aj = by.get("fa-jwt"), by.get("fa-db"), by.get("authjs")
    def paired(key: str, base: str) -> tuple[float, str] | None:
        """The req/s ratio of two targets measured in alternation: the
        medians' (three decimals: a target's edge is visible), then each
        pair's."""
        r, b = by.get(key), by.get(base)
        if not (r and b):
            return None
        q = r["rps"] / b["rps"]
        pairs = list(zip([x["rps"] for x in runs if x.get("key") == base],
                         [x["rps"] for x in runs if x.get("key") == key]))
        each = ("; each pair: " + ", ".join(f"{s / d:.2f}" for d, s in pairs)) if len(pairs) > 1 else ""
        return q, f"{q:.3f} ({r['rps']:,.0f} / {b['rps']:,.0f}{' medians' if each else ''}{each})"

    v = paired("pc-proxy-jwt", "nginx-proxy")
    if v:
        out.append(f"| Portcullis proxy (`jwt`) / nginx `proxy_pass` (no auth, {meta.get('edge_workers', '?')} "
                   f"workers each) req/s | {v[1]} | ≥ 0.95 | {verdict(v[0] >= 0.95)} |")
    v = paired("fa-db", "fa-jwt")
    if v:
        out.append(f"| forward-auth `database` / `jwt` req/s, {meta.get('conns', '?')} connections | "
                   f"{v[1]} | ≥ 0.80 | {verdict(v[0] >= 0.80)} |")
    # 6c-6e: each SQL store against Redis (6b), measured in alternation
    def vs_redis(key: str) -> tuple[float, str] | None:
        return paired(key, "fa-db")

    for key, store in (("fa-db-pg", "PostgreSQL"), ("fa-db-sqlite", "SQLite")):
        v = vs_redis(key)
        if v:
            out.append(f"| forward-auth `database` {store} / Redis req/s, {meta.get('conns', '?')} connections | "
                       f"{v[1]} | ≥ 0.60 | {verdict(v[0] >= 0.60)} |")
    if fa and aj:
        q = fa["rps"] / aj["rps"]
        out.append(f"| Portcullis forward-auth (`jwt`) / Auth.js `GET /auth/session` req/s | "
                   f"{q:.1f}x ({fa['rps']:,.0f} / {aj['rps']:,.0f}) | ≥ 50x | {verdict(q >= 50)} |")
    idle = next((e for e in ex.get("rss", []) if e["label"] == "idle"), None)
    if idle:
        out.append(f"| RSS idle (after start + one sign-in, `jwt`) | {mb(idle['kb'])} | < 20 MB | "
                   f"{verdict(idle['kb'] * 1024 < 20e6)} |")
    c = (ex.get("conns") or [None])[0]
    if c:
        out.append(f"| RSS with {c['count']:,} open keep-alive connections | {mb(c['rss_open_kb'])} "
                   f"({c['still_open']:,} still open when read) | < 100 MB | "
                   f"{verdict(c['rss_open_kb'] * 1024 < 100e6 and c['still_open'] == c['count'])} |")
    ck = (ex.get("cookie") or [None])[0]
    if ck:
        # What Portcullis sends on every request: its session cookie never
        # holds the ID token (that one rides in a cookie whose Path is the
        # sign-out path); the with-ID-token size is below, for comparison.
        for variant in VARIANTS[1:]:
            v = ck[variant]
            out.append(f"| `jwt` session cookie, OIDC user with 10 groups, {variant} | "
                       f"{v['cookie_bytes']:,} bytes | < 1,500 bytes | {verdict(v['cookie_bytes'] < 1500)} |")
    out += ["", "Other comparisons (no target):", ""]

    def q(a: str, b: str, text: str) -> None:
        if a in by and b in by:
            out.append(f"- {text}: {by[a]['rps'] / by[b]['rps']:.2f} "
                       f"({by[a]['rps']:,.0f} / {by[b]['rps']:,.0f} req/s)")

    def cpu_us(r: dict, *labels: str) -> float:
        return sum(r["cpu_pct"].get(l, 0) for l in labels) * 1e4 / r["rps"]

    if fa and aj and fa["cpu_pct"].get("portcullis") and aj["cpu_pct"].get("node"):
        a, b = cpu_us(fa, "portcullis"), cpu_us(aj, "node")
        out.append(f"- CPU per request, the same check: Portcullis forward-auth {a:.1f} µs, Auth.js under "
                   f"Node {b:.0f} µs: {b / a:.0f}x (the req/s ratio is lower because wrk's own CPU "
                   "shares the machine with the faster server)")
    if fa and fadb and fa["cpu_pct"].get("portcullis"):
        a, b = cpu_us(fa, "portcullis"), cpu_us(fadb, "portcullis", "redis")
        out.append(f"- CPU per forward-auth request: `jwt` {a:.1f} µs (Portcullis), `database` {b:.1f} µs "
                   f"(Portcullis {cpu_us(fadb, 'portcullis'):.1f} + Redis {cpu_us(fadb, 'redis'):.1f}): "
                   f"`jwt` / `database` {a / b:.2f}")
    v = vs_redis("fa-db-mysql")
    if v:
        out.append(f"- forward-auth `database` {meta.get('mysql_name', 'MySQL/MariaDB')} / Redis req/s: {v[1]}")
    stores = [(k, s, l) for k, s, l in (("fa-db", "Redis", "redis"), ("fa-db-pg", "PostgreSQL", "postgres"),
                                        ("fa-db-mysql", meta.get("mysql_name", "MySQL/MariaDB"),
                                         meta.get("mysql_name", "mysql").lower()),
                                        ("fa-db-sqlite", "SQLite", None)) if k in by]
    if len(stores) > 1 and all(by[k]["cpu_pct"].get("portcullis") for k, _, _ in stores):
        parts = []
        for k, store, label in stores:
            r = by[k]
            if label and label in r["cpu_pct"]:
                parts.append(f"{store} {cpu_us(r, 'portcullis', label):.1f} µs (Portcullis "
                             f"{cpu_us(r, 'portcullis'):.1f} + {store} {cpu_us(r, label):.1f})")
            else:
                parts.append(f"{store} {cpu_us(r, 'portcullis'):.1f} µs (Portcullis"
                             + (", SQLite inside it)" if label is None else " only)"))
        out.append("- CPU per forward-auth request with a `database` session, by store: " + ", ".join(parts)
                   + "; wrk: " + ", ".join(f"{store} {cpu_us(by[k], 'wrk'):.1f}" for k, store, _ in stores)
                   + " µs")
    q("nginx-auth", "nginx-proxy", "nginx `auth_request` + Portcullis / nginx `proxy_pass` alone")
    q("pc-proxy-jwt", "nginx-proxy", "Portcullis proxy (`jwt` session) / nginx `proxy_pass` (no auth)")
    # 8.: the same proxy step on Portcullis's HTTP stack with nothing
    # else, measured in alternation with 2. and 4.
    for key, base, text in (("bare-proxy", "nginx-proxy", "bare hyper proxy (no auth) / nginx `proxy_pass` "
                             "(no auth): the most a proxy on Portcullis's HTTP stack reaches here"),
                            ("pc-proxy-jwt", "bare-proxy", "Portcullis proxy (`jwt`) / bare hyper proxy: "
                             "what the session check, identity headers, metrics and the rest cost")):
        v = paired(key, base)
        if v:
            out.append(f"- {text}: {v[1]}")
    trio = [(k, n, l) for k, n, l in (("nginx-proxy", "nginx", "nginx (edge)"), ("bare-proxy", "bare hyper proxy",
                                       "bare proxy"), ("pc-proxy-jwt", "Portcullis", "portcullis")) if k in by]
    if len(trio) > 1 and all(by[k]["cpu_pct"].get(l) for k, _, l in trio):
        out.append("- CPU per proxied request, the proxy process alone: " + ", ".join(
            f"{n} {cpu_us(by[k], l):.1f} µs" for k, n, l in trio))
    q("pc-proxy-jwt", "nginx-auth", "Portcullis proxy (`jwt`) / nginx `auth_request` + Portcullis")
    q("pc-proxy-db", "pc-proxy-jwt", "Portcullis proxy `database` / `jwt`")
    for key, label in (("pc-proxy-jwt", "`jwt`"), ("pc-proxy-db", "`database`")):
        r = by.get(key)
        if r and r.get("rss_peak_kb"):
            out.append(f"- RSS under load (peak while measuring the proxy, {label}): {mb(r['rss_peak_kb'])}")
    if c:
        per = (c["rss_open_kb"] - c["rss_before_kb"]) * 1024 / c["count"]
        out.append(f"- {c['count']:,} connections (a fresh instance, each connection sent one "
                   f"proxied request with the session, then idle): RSS {mb(c['rss_before_kb'])} before, "
                   f"{mb(c['rss_open_kb'])} with them open ({per / 1000:.1f} kB per connection), "
                   f"{mb(c['rss_after_close_kb'])} 2 s after closing them; opening them took "
                   f"{c['open_s']:.1f} s")
    for cs in ex.get("coldstart", []):
        out.append(f"- cold start, {cs['label']}: median {cs['median_ms']:.0f} ms from exec to the first "
                   f"200 on /healthz (runs: {', '.join(f'{t:.0f}' for t in cs['times_ms'])} ms)")
    if ck:
        out.append("- session cookie sizes are `authjs.session-token=<JWE>` as the browser sends it, "
                   "minted by @auth/core (JWE / claims JSON bytes: "
                   + "; ".join(f"{v}: {ck[v]['value_bytes']:,} / {ck['claims_json_bytes'][v]:,}" for v in VARIANTS)
                   + ")" + ("; Portcullis accepted each" if ck[VARIANTS[0]].get("accepted_by_portcullis") else "")
                   + ". Portcullis keeps the ID token out of the `jwt` session cookie: it "
                   "rides in its own sealed cookie whose Path is `{base}/signout`, sent only to "
                   "sign out with `id_token_hint` (`database` sessions keep it server-side); "
                   f"with it inside, as Auth.js would keep it, the cookie is "
                   f"{ck[VARIANTS[0]]['cookie_bytes']:,} bytes")
    for e in ex.get("rss", []):
        if e["label"] != "idle":
            out.append(f"- RSS {e['label']}: {mb(e['kb'])}")
    for e in {e["key"]: e for e in ex.get("redis", [])}.values():  # the last try's
        r = by.get(e["key"])
        if not r or not e.get("requests"):
            continue
        n = e["requests"]
        cmds = ", ".join(f"{k} {v['calls'] / n:.2f} ({v['usec'] / max(v['calls'], 1):.1f} µs each)"
                         for k, v in sorted(e["commands"].items(), key=lambda kv: -kv[1]["calls"])
                         if v["calls"] / n >= 0.01)
        out.append(f"- Redis commands per request, {r['name']}: {cmds or 'none'} "
                   "(from INFO commandstats, which also counts the commands a script runs; "
                   "µs: Redis's own time per call)")
    if "session_cookie_bytes" in meta:
        out.append(f"- the benchmark's own session (credentials user, no groups): "
                   f"{meta['session_cookie_bytes']} bytes of cookie (`jwt`), 43 (`database`)")
    # ---- raw table
    if runs:
        out += ["", "## Throughput", "", table_text(runs, ratios=False)]
    # ---- machine and command
    out += ["", "## Machine and command", ""]
    for k, label in (("date", "date"), ("cpu", "CPU"), ("kernel", "kernel"), ("commit", "git commit"),
                     ("binary", "binary"), ("command", "command"), ("wrk", "load"),
                     ("versions", "versions"), ("setup", "setup")):
        if k in meta:
            out.append(f"- {label}: {meta[k]}")
    print("\n".join(out))
    return 0


def main() -> int:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, rest = sys.argv[1], sys.argv[2:]
    if cmd == "port":
        print(free_port())
        return 0
    if cmd == "json-field":
        try:
            v = json.load(sys.stdin)[rest[0]]
        except (ValueError, KeyError, TypeError) as e:
            sys.exit(f"json-field: {e}")
        print(v)
        return 0
    if cmd == "measure":
        return measure(rest)
    if cmd == "table":
        return table(rest[0])
    if cmd == "quiet":  # quiet MAX_SECONDS: wait until the machine idles
        deadline = time.monotonic() + float(rest[0])
        while True:
            b0, t0 = machine_busy()
            time.sleep(1)
            b1, t1 = machine_busy()
            pct = 100 * (b1 - b0) / max(t1 - t0, 1e-9) * (os.cpu_count() or 1)
            if pct < 15 or time.monotonic() >= deadline:
                print(f"{pct:.0f}")
                return 0
    if cmd == "rss":
        v = rss_kb(int(rest[0]))
        if v is None:
            sys.exit(f"rss: no process {rest[0]}")
        print(v)
        return 0
    if cmd == "conns":
        return conns(rest)
    if cmd == "coldstart":
        return coldstart(rest)
    if cmd == "cookie-size":
        return cookie_size(rest)
    if cmd == "report":
        return report(rest)
    if cmd == "redis-stats":  # INFO commandstats on stdin -> one JSON line
        calls = {}
        for line in sys.stdin:
            m = re.match(r"cmdstat_([^:]+):calls=(\d+),usec=(\d+)", line)
            if m:
                calls[m.group(1)] = {"calls": int(m.group(2)), "usec": int(m.group(3))}
        run = json.loads(rest[1])  # the wrk run the stats are of
        print(json.dumps({"kind": "redis", "key": rest[0], "requests": run["requests"],
                          "rest_of_machine": run["cpu_pct"]["rest of machine"], "commands": calls}))
        return 0
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main())
