#!/usr/bin/env python3
"""Soak: N concurrent clients against a local 3-rank `headwise serve` cluster
for a set time, with a mixed workload, and a verdict.

The cluster is `mpirun -np 3 headwise serve --kv-block 64 --context-dir DIR
--max-queue 2` (tests/util/harness.Server) with four passkey documents
(harness.passkey_document, ~800 tokens each) in DIR. Every request is one
headwise CLI client run as a subprocess (the venv has no grpcio), so a
"client crash" is a client that died of a signal or exited other than 0/1
(or 1 without a gRPC code on stderr), and a "hang" is a client still running
after --hang-timeout seconds (it is then killed).

Kinds of request, drawn by each client from a shared shuffled deck (DECK,
changed with --weights), so every kind runs in a short soak too:
  generate         generate --server -p SHORT -n 8|16|24|32 (greedy: the text
                   of a (prompt, n) pair must be the same every time)
  open             ask --server-file DOC (or -f DOC, streamed) --keep-session:
                   OpenSession + Ask; the answer must hold DOC's pass key; the
                   session joins the soak's pool (at most --max-sessions open
                   or opening at once)
  ask_session      ask --session ID on a pooled session (leased: no other
                   client touches it meanwhile); the answer must hold the key
                   and be the session's first answer, word for word
  ask_unknown      ask --session <random id>                  -> NOT_FOUND
  close            close ID (a pooled session)
  close_unknown    close <random id>                          -> NOT_FOUND
  missing_file     ask --server-file <absent file>            -> NOT_FOUND
  cancel_ask       ask --session ID -n 400, killed at its first answer byte
  cancel_generate  generate -n 400, killed at its first answer byte
  cancel_open      an open killed 0.2-2.5 s in (mid-prefill, or while queued;
                   retried up to 3 times while refused)
  deadline         ask --session ID --timeout 0.05 -n 200      -> DEADLINE_EXCEEDED
  bad_sampling     --top-p 2, --temp -1, --min-p 1.5, --repeat-penalty -1,
                   -n 1e8, a prompt past the context           -> INVALID_ARGUMENT
  bad_path         --server-file ../x, /etc/hostname, a/../../x -> PERMISSION_DENIED
  status           the monitor's own `headwise status` calls (every ~2 s)
Every kind that waits for the engine's queue may also be refused
RESOURCE_EXHAUSTED (the client then backs off --backoff seconds); those
validated before the queue (bad_sampling, bad_path, missing_file) may not.

Phases: priming (--max-sessions sessions opened, then one generate per
prompt while they are open: the pools' high water the workload can reach),
the warm-up (--warmup of --duration), a checkpoint, the rest of --duration,
a checkpoint. A checkpoint waits for the clients in flight, closes every
session the soak kept, waits for the engine to be idle, and measures every
rank's RSS (/proc; the ranks are the processes under mpirun with
OMPI_COMM_WORLD_RANK) and host KV pool bytes (`headwise status`: "rank N
(...): host KV X MiB"). Sessions still on the server then are orphans (opened
for a client that never got their id); they are recorded, closed, and
everything measured again. Memory growth is a rank's RSS at the last
checkpoint minus its RSS at the warm-up checkpoint, both idle with no session
open, so the sessions open at the instant of a sample do not count as
growth. Meanwhile RSS, the pool bytes and the load average are sampled every
--interval seconds into a time series.

Verdict (all must hold): no hang; no client crash; only the expected codes
per kind; every kind ran; every answer right; the cluster still SERVING; no
orphan session (beyond cancel_open clients killed after "prefill done", which
the server cannot tell from a client that leaves its session open); every
rank's pool bytes at both checkpoints equal to before the workload; every
rank's RSS growth < --rss-bound-mib and < --rss-bound-frac of its warm-up
value; the job ending on SIGTERM (rank 0 drained: "headwise serve: stopped";
mpirun itself exits 1 when signalled). Exit 0 on a pass, 1 otherwise, 77 without
the model.

  .venv/bin/python bench/soak.py --duration 600 --clients 6   # bench/out/soak.json
"""
import argparse
import atexit
import json
import os
import platform
import random
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "util"))
from harness import Server, passkey_document  # noqa: E402

QUESTION = "What is the pass key? Answer with the number only."
STORY = "Tell me a long story about the pass key."
KEYS = [71432, 50815, 29384, 60617]
PROMPTS = ["The capital of France is", "Once upon a time", "List three colors:",
           "def fibonacci(n):", "The quick brown fox", "Water boils at"]

# Codes each kind may end with. KILLED: the soak killed the client on purpose.
QUEUED = {"RESOURCE_EXHAUSTED"}
EXPECTED = {
    "generate": {"OK"} | QUEUED,
    "open": {"OK"} | QUEUED,
    "ask_session": {"OK"} | QUEUED,
    "ask_unknown": {"NOT_FOUND"} | QUEUED,
    "close": {"OK"} | QUEUED,
    "close_unknown": {"NOT_FOUND"} | QUEUED,
    "missing_file": {"NOT_FOUND"},
    "cancel_ask": {"KILLED", "OK"} | QUEUED,
    "cancel_generate": {"KILLED", "OK"} | QUEUED,
    "cancel_open": {"KILLED", "OK"} | QUEUED,
    "deadline": {"DEADLINE_EXCEEDED"} | QUEUED,
    "bad_sampling": {"INVALID_ARGUMENT"},
    "bad_path": {"PERMISSION_DENIED"},
    "status": {"OK"} | QUEUED,
}
# The deck each client draws its next request from (refilled and reshuffled
# when empty): the relative weights of the workload.
DECK = {"generate": 5, "open": 2, "ask_session": 4, "ask_unknown": 1, "close": 1,
        "close_unknown": 1, "missing_file": 1, "cancel_ask": 1, "cancel_generate": 1,
        "cancel_open": 2, "deadline": 2, "bad_sampling": 2, "bad_path": 2}
NEEDS_SESSION = {"ask_session", "close", "cancel_ask", "deadline"}
CODE_RE = re.compile(r"^headwise \w+: ([A-Z_]+): (.*)$", re.M)
RANK_RE = re.compile(r"^rank (\d+) \([^)]*\): host KV ([0-9.]+) MiB \(peak ([0-9.]+) MiB\)", re.M)
SESSION_RE = re.compile(r"^session ([0-9a-f]+): (\d+) context tokens", re.M)


def percentile(values, q):
    """Nearest-rank percentile (q in [0, 100]); None for no values."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))]


def machine():
    info = {"cores": os.cpu_count(), "kernel": platform.release(), "hostname": platform.node()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                info["ram_gib"] = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def binary_info(path):
    info = {"path": os.path.abspath(path)}
    try:
        st = os.stat(path)
        info.update(size=st.st_size, mtime=time.strftime("%Y-%m-%dT%H:%M:%S",
                                                         time.localtime(st.st_mtime)))
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        info["repo_head"] = head.stdout.strip()  # the checkout now, not the build's
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def loadavg():
    try:
        return [float(x) for x in open("/proc/loadavg").read().split()[:3]]
    except OSError:
        return None


def rank_pids(root_pid):
    """{rank: pid} of the processes under root_pid with OMPI_COMM_WORLD_RANK."""
    parent = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            parent[int(entry)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    out = {}
    for pid in parent:
        p, depth = pid, 0
        while p in parent and p != root_pid and depth < 16:
            p, depth = parent[p], depth + 1
        if p != root_pid or pid == root_pid:
            continue
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        for var in env:
            if var.startswith(b"OMPI_COMM_WORLD_RANK="):
                out[int(var.split(b"=", 1)[1])] = pid
    return out


def rss_kib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class Sessions:
    """The sessions the soak kept open: idle ones may be leased by one client
    at a time; opens in flight hold a reserved slot under the cap."""

    def __init__(self, cap):
        self.cap = cap
        self.lock = threading.Lock()
        self.idle = {}      # id -> (key, first answer)
        self.busy = {}
        self.opening = 0    # opens in flight (they count against the cap)

    def count(self):
        with self.lock:
            return len(self.idle) + len(self.busy)

    def reserve(self):
        """A slot for one more session (an open about to start), or False."""
        with self.lock:
            if len(self.idle) + len(self.busy) + self.opening >= self.cap:
                return False
            self.opening += 1
            return True

    def unreserve(self):
        with self.lock:
            self.opening -= 1

    def add(self, sid, key, answer):
        with self.lock:
            self.idle[sid] = (key, answer)

    def lease(self):
        with self.lock:
            if not self.idle:
                return None
            sid = random.choice(list(self.idle))
            self.busy[sid] = self.idle.pop(sid)
            return sid, self.busy[sid]

    def give_back(self, sid):
        with self.lock:
            self.idle[sid] = self.busy.pop(sid)

    def drop(self, sid):
        with self.lock:
            self.busy.pop(sid, None)
            self.idle.pop(sid, None)

    def all_ids(self):
        with self.lock:
            return list(self.idle) + list(self.busy)


class Soak:
    def __init__(self, a, server, docs, tmp):
        self.a = a
        self.hw = a.headwise
        self.addr = server.address
        self.server = server
        self.docs = docs              # [(server-relative name, local path, key)]
        self.tmp = tmp
        self.sessions = Sessions(a.max_sessions)
        self.lock = threading.Lock()
        self.records = []             # every request
        self.anomalies = []           # unexpected outcomes, crashes, hangs, wrong answers
        self.wrong_answers = 0
        self.spawn_retries = 0        # the client binary could not be started (a rebuild)
        self.killed_after_open = 0    # cancel_open clients killed after their session opened
        self.generate_ref = {}        # (prompt, n) -> text
        self.deck = []
        self.tls = threading.local()
        self.t0 = time.monotonic()
        self.stop_at = 0.0
        self.samples = []
        self.status_samples = []
        self.monitor_stop = threading.Event()
        self.pids = {}
        self.long_prompt = os.path.join(tmp, "long.txt")
        with open(self.long_prompt, "w") as f:
            f.write("word " * 9000)

    # ---- one client process ---------------------------------------------
    def call(self, kind, argv, kill_at_first_byte=False, kill_after=None, record=True):
        """Runs `headwise ARGV`; returns (outcome, stdout, stderr, seconds)."""
        for attempt in range(120):  # the binary may be being rebuilt: retry
            try:
                start = time.monotonic()
                p = subprocess.Popen([self.hw, *argv], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
                break
            except OSError:
                if attempt == 119:
                    raise
                with self.lock:
                    self.spawn_retries += 1
                time.sleep(0.5)
        killed = False
        hang = False
        head = b""
        try:
            if kill_at_first_byte:
                ready, _, _ = select.select([p.stdout], [], [], self.a.hang_timeout)
                if not ready:
                    hang = True
                else:
                    head = os.read(p.stdout.fileno(), 1)
                    if head == b"\n":
                        # The client writes a newline when the stream ends,
                        # an error included: give it time to exit.
                        try:
                            p.wait(timeout=0.3)
                        except subprocess.TimeoutExpired:
                            pass
                    if head and p.poll() is None:  # the answer started: go away mid-answer
                        p.kill()
                        killed = True
            elif kill_after is not None:
                try:
                    p.wait(timeout=kill_after)
                except subprocess.TimeoutExpired:
                    p.kill()
                    killed = True
            if not hang:
                remaining = max(1.0, self.a.hang_timeout - (time.monotonic() - start))
                out, err = p.communicate(timeout=remaining)
        except subprocess.TimeoutExpired:
            hang = True
        if hang:
            p.kill()
            out, err = p.communicate()
        seconds = time.monotonic() - start
        out = (head + out).decode(errors="replace")
        err = err.decode(errors="replace")
        rc = p.returncode
        m = CODE_RE.search(err)
        if hang:
            outcome = "HANG"
        elif killed:
            outcome = "KILLED"
        elif rc == 0:
            outcome = "OK"
        elif rc == 1 and m:
            outcome = m.group(1)
        else:
            outcome = "CLIENT_CRASH"
        if record:
            self.record(kind, outcome, seconds, argv, rc, err)
            self.tls.last = outcome
        return outcome, out, err, seconds

    def record(self, kind, outcome, seconds, argv, rc, err):
        with self.lock:
            self.records.append({"kind": kind, "outcome": outcome, "seconds": round(seconds, 4),
                                 "t": round(time.monotonic() - self.t0, 2)})
            if outcome not in EXPECTED[kind]:
                self.anomalies.append({"kind": kind, "outcome": outcome, "rc": rc,
                                       "t": round(time.monotonic() - self.t0, 2),
                                       "argv": argv, "stderr_tail": err[-800:]})

    def wrong(self, kind, what, out, err):
        with self.lock:
            self.wrong_answers += 1
            self.anomalies.append({"kind": kind, "outcome": "WRONG_ANSWER", "what": what,
                                   "t": round(time.monotonic() - self.t0, 2),
                                   "stdout": out[-400:], "stderr_tail": err[-400:]})

    # ---- the kinds ------------------------------------------------------
    def srv(self):
        return ["--server", self.addr]

    def do_generate(self):
        prompt = random.choice(PROMPTS)
        n = random.choice([8, 16, 24, 32])
        outcome, out, err, _ = self.call("generate",
                                         ["generate", *self.srv(), "-p", prompt, "-n", str(n)])
        if outcome == "OK":
            with self.lock:
                ref = self.generate_ref.setdefault((prompt, n), out)
            if out != ref:
                self.wrong("generate", f"greedy text of ({prompt!r}, {n}) changed", out, err)

    def do_open(self, kind="open", kill_after=None, doc=None):
        if not self.sessions.reserve():
            return self.do_close()
        name, path, key = doc or random.choice(self.docs)
        source = ["--server-file", name] if random.random() < 0.5 else ["-f", path]
        try:
            outcome, out, err, _ = self.call(
                kind, ["ask", *self.srv(), *source, "--keep-session", QUESTION, "-n", "16"],
                kill_after=kill_after)
            m = re.search(r"^session: ([0-9a-f]+)$", err, re.M)
            if m:  # the session is open (its Ask may still have been refused)
                answer = out if outcome == "OK" else None
                self.sessions.add(m.group(1), key, answer)
        finally:
            self.sessions.unreserve()
        if outcome == "OK" and str(key) not in out:
            self.wrong(kind, f"pass key {key} not in the answer", out, err)
        if outcome == "KILLED" and "prefill done" in err:
            # Killed after its OpenSession returned, before it printed the id:
            # an orphan the server cannot know about (not a server leak).
            with self.lock:
                self.killed_after_open += 1

    def do_ask_session(self):
        leased = self.sessions.lease()
        if leased is None:
            return self.do_generate()
        sid, (key, first) = leased
        outcome, out, err, _ = self.call("ask_session", ["ask", *self.srv(), "--session", sid,
                                                         QUESTION, "-n", "16"])
        if outcome == "OK":
            if str(key) not in out:
                self.wrong("ask_session", f"pass key {key} not in the answer", out, err)
            elif first is None:
                with self.sessions.lock:
                    self.sessions.busy[sid] = (key, out)
            elif out != first:
                self.wrong("ask_session", "the session's answer changed", out + "|" + first, err)
        if outcome == "NOT_FOUND":
            self.sessions.drop(sid)
        else:
            self.sessions.give_back(sid)

    def do_close(self):
        leased = self.sessions.lease()
        if leased is None:
            return self.do_close_unknown()
        sid = leased[0]
        outcome, _, _, _ = self.call("close", ["close", *self.srv(), sid])
        if outcome in ("OK", "NOT_FOUND"):
            self.sessions.drop(sid)
        else:
            self.sessions.give_back(sid)

    def random_id(self):
        return "%016x" % random.getrandbits(64)

    def do_ask_unknown(self):
        self.call("ask_unknown", ["ask", *self.srv(), "--session", self.random_id(), QUESTION,
                                  "-n", "8"])

    def do_close_unknown(self):
        self.call("close_unknown", ["close", *self.srv(), self.random_id()])

    def do_missing_file(self):
        self.call("missing_file", ["ask", *self.srv(), "--server-file",
                                   f"absent-{random.getrandbits(32):08x}.txt", QUESTION])

    def do_cancel_ask(self):
        leased = self.sessions.lease()
        if leased is None:
            return self.do_cancel_generate()
        sid = leased[0]
        outcome, _, _, _ = self.call("cancel_ask", ["ask", *self.srv(), "--session", sid,
                                                    "--ignore-eos", "-n", "400", STORY],
                                     kill_at_first_byte=True)
        if outcome == "NOT_FOUND":
            self.sessions.drop(sid)
        else:
            self.sessions.give_back(sid)

    def do_cancel_generate(self):
        self.call("cancel_generate", ["generate", *self.srv(), "-p", random.choice(PROMPTS),
                                      "--ignore-eos", "-n", "400"], kill_at_first_byte=True)

    def do_cancel_open(self):
        # Retried when refused, so that most of them reach the engine.
        for _ in range(3):
            self.tls.last = None
            self.do_open("cancel_open", kill_after=random.uniform(0.2, 2.5))
            if self.tls.last != "RESOURCE_EXHAUSTED" or time.monotonic() >= self.stop_at:
                break
            time.sleep(random.uniform(*self.a.backoff))

    def do_deadline(self):
        leased = self.sessions.lease()
        if leased is None:
            return self.do_ask_unknown()
        sid = leased[0]
        outcome, _, _, _ = self.call("deadline", ["ask", *self.srv(), "--session", sid,
                                                  "--timeout", "0.05", "--ignore-eos", "-n",
                                                  "200", STORY])
        if outcome == "NOT_FOUND":
            self.sessions.drop(sid)
        else:
            self.sessions.give_back(sid)

    def do_bad_sampling(self):
        variants = [
            ["generate", *self.srv(), "-p", "hi", "--top-p", "2"],
            ["generate", *self.srv(), "-p", "hi", "--temp", "-1"],
            ["generate", *self.srv(), "-p", "hi", "--repeat-penalty", "-1"],
            ["generate", *self.srv(), "-p", "hi", "-n", "100000000"],
            ["generate", *self.srv(), "-f", self.long_prompt, "-n", "4"],
            ["ask", *self.srv(), "--session", self.random_id(), "--min-p", "1.5", QUESTION],
        ]
        self.call("bad_sampling", random.choice(variants))

    def do_bad_path(self):
        name = random.choice(["../passkey.txt", "/etc/hostname", "sub/../../x.txt",
                              "../../../../etc/passwd"])
        self.call("bad_path", ["ask", *self.srv(), "--server-file", name, QUESTION])

    def draw(self):
        with self.lock:
            if not self.deck:
                self.deck = [k for k, w in self.a.deck.items() for _ in range(w)]
                random.shuffle(self.deck)
            return self.deck.pop()

    def client(self, index):
        while time.monotonic() < self.stop_at:
            kind = self.draw()
            if kind in NEEDS_SESSION and self.sessions.count() == 0:
                kind = "open" if self.sessions.opening == 0 else "generate"
            self.tls.last = None
            getattr(self, "do_" + kind)()
            if self.tls.last == "RESOURCE_EXHAUSTED":  # refused: retry later, like a client
                time.sleep(random.uniform(*self.a.backoff))
            else:
                time.sleep(random.uniform(0, self.a.think))

    def prime(self):
        """Opens --max-sessions sessions (the documents in turn) and runs
        every prompt's longest generate while they are open: the KV pools'
        high water that the workload can reach, inside the warm-up."""
        for _ in range(60):
            if self.sessions.count() >= self.a.max_sessions:
                break
            self.tls.last = None
            self.do_open(doc=self.docs[self.sessions.count() % len(self.docs)])
            if self.tls.last != "OK":
                time.sleep(1)
        for prompt in PROMPTS:
            self.call("generate", ["generate", *self.srv(), "-p", prompt, "-n", "32"])

    def run_phase(self, seconds):
        self.stop_at = time.monotonic() + seconds
        threads = [threading.Thread(target=self.client, args=(i,), daemon=True)
                   for i in range(self.a.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    # ---- observation ----------------------------------------------------
    def status(self, kind="status", record=True):
        """(outcome, {rank: host KV MiB}, [session ids], SERVING?, {rank: peak MiB})"""
        outcome, out, err, _ = self.call(kind, ["status", *self.srv()], record=record)
        pools = {int(r): float(used) for r, used, _ in RANK_RE.findall(out)}
        peaks = {int(r): float(peak) for r, _, peak in RANK_RE.findall(out)}
        sessions = [sid for sid, _ in SESSION_RE.findall(out)]
        return outcome, pools, sessions, ": SERVING" in out, peaks

    def rss(self):
        return {r: rss_kib(pid) for r, pid in sorted(self.pids.items())}

    def rss_monitor(self):
        while not self.monitor_stop.wait(self.a.interval):
            self.samples.append({"t": round(time.monotonic() - self.t0, 2), "rss_kib": self.rss(),
                                 "loadavg": loadavg(), "sessions_kept": self.sessions.count()})

    def status_monitor(self):
        while not self.monitor_stop.is_set():
            began = time.monotonic()
            outcome, pools, sessions, _, _ = self.status()
            self.status_samples.append({"t": round(began - self.t0, 2), "outcome": outcome,
                                        "seconds": round(time.monotonic() - began, 3),
                                        "host_kv_mib": pools, "server_sessions": len(sessions)})
            self.monitor_stop.wait(max(0.0, self.a.interval - (time.monotonic() - began)))

    def close_all(self):
        """Closes every session the soak kept (retrying a refused close)."""
        closed = 0
        for sid in self.sessions.all_ids():
            for _ in range(60):
                outcome, _, _, _ = self.call("close", ["close", *self.srv(), sid])
                if outcome in ("OK", "NOT_FOUND"):
                    closed += outcome == "OK"
                    break
                time.sleep(0.5)
            self.sessions.drop(sid)
        return closed

    def measure(self):
        # A first status waits its turn behind whatever the engine still runs
        # (a killed client's prefill goes on to its end), then the real one.
        for _ in range(20):
            if self.status(record=False)[0] == "OK":
                break
            time.sleep(1)
        time.sleep(self.a.settle)
        for _ in range(20):
            outcome, pools, sessions, serving, peaks = self.status(record=False)
            if outcome == "OK":
                break
            time.sleep(1)
        return {"t": round(time.monotonic() - self.t0, 2), "rss_kib": self.rss(),
                "host_kv_mib": pools, "host_kv_peak_mib": peaks, "server_sessions": sessions,
                "serving": serving, "loadavg": loadavg()}

    def checkpoint(self, label):
        """With the clients stopped: closes every session the soak kept, then
        measures RSS and the pools. Sessions still on the server are orphans
        (opened for a client that never got their id): they are recorded,
        closed, and everything measured again ("clean")."""
        point = {"label": label, "sessions_closed": self.close_all()}
        point.update(self.measure())
        point["orphans"] = sorted(point["server_sessions"])
        if point["orphans"]:
            for sid in point["orphans"]:
                self.call("close", ["close", *self.srv(), sid], record=False)
            point["clean"] = self.measure()
        else:
            point["clean"] = {k: point[k] for k in ("rss_kib", "host_kv_mib", "server_sessions")}
        print(f"soak: checkpoint {label} at {point['t']:.0f} s: rss {point['rss_kib']} KiB, "
              f"host KV {point['host_kv_mib']} MiB, {len(point['orphans'])} orphan sessions"
              + (f" (closed: host KV {point['clean']['host_kv_mib']} MiB)"
                 if point["orphans"] else ""), flush=True)
        return point


def summarize(records):
    by_kind = {}
    for r in records:
        k = by_kind.setdefault(r["kind"], {"requests": 0, "outcomes": {}, "all": [], "ok": []})
        k["requests"] += 1
        k["outcomes"][r["outcome"]] = k["outcomes"].get(r["outcome"], 0) + 1
        k["all"].append(r["seconds"])
        if r["outcome"] == "OK":
            k["ok"].append(r["seconds"])
    out = {}
    for kind, k in sorted(by_kind.items()):
        out[kind] = {"requests": k["requests"], "outcomes": dict(sorted(k["outcomes"].items())),
                     "p50_s": percentile(k["all"], 50), "p99_s": percentile(k["all"], 99),
                     "ok_p50_s": percentile(k["ok"], 50), "ok_p99_s": percentile(k["ok"], 99)}
    totals = {}
    for r in records:
        totals[r["outcome"]] = totals.get(r["outcome"], 0) + 1
    return out, dict(sorted(totals.items()))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--headwise", default=os.path.join(ROOT, "build", "launcher", "headwise"))
    p.add_argument("--model", default=os.path.join(ROOT, "models",
                                                   "SmolLM2-135M-Instruct.Q4_1.gguf"))
    p.add_argument("--duration", type=float, default=600, help="seconds of workload")
    p.add_argument("--warmup", type=float, default=0.2,
                   help="fraction of --duration before the warm-up checkpoint")
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--ranks", type=int, default=3)
    p.add_argument("--max-queue", type=int, default=2,
                   help="serve --max-queue (small, so that some requests are refused)")
    p.add_argument("--max-sessions", type=int, default=0,
                   help="sessions the soak keeps open at most (0: clients / 2 + 1)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between samples")
    p.add_argument("--think", type=float, default=0.2,
                   help="a client waits up to this long (uniform) between requests")
    p.add_argument("--backoff", type=float, nargs=2, default=[0.5, 1.5],
                   help="after RESOURCE_EXHAUSTED a client waits between these (uniform)")
    p.add_argument("--hang-timeout", type=float, default=120,
                   help="a client running longer than this is a hang")
    p.add_argument("--settle", type=float, default=3.0,
                   help="seconds idle before a checkpoint's measurements")
    # Rank 0's idle RSS wanders with glibc's per-thread arenas (gRPC handler
    # threads keep what they freed): +93 MiB (11%) between the idle
    # checkpoints of a clean 10-minute soak; memory ranks hold their pool's
    # high water, reached while priming (0 MiB). docs/RELIABILITY.md, "Soak".
    p.add_argument("--rss-bound-mib", type=float, default=128.0,
                   help="RSS growth bound per rank, MiB")
    p.add_argument("--rss-bound-frac", type=float, default=0.15,
                   help="RSS growth bound per rank, fraction of its warm-up RSS")
    p.add_argument("--weights", default="",
                   help="deck weights to change, e.g. cancel_open=4,generate=2 (0 drops a kind)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "out", "soak.json"))
    a = p.parse_args()
    if not os.path.exists(a.model):
        print(f"SKIP: {a.model} not found: run scripts/fetch-model")
        return 77
    a.deck = dict(DECK)
    for item in filter(None, a.weights.split(",")):
        kind, _, weight = item.partition("=")
        if kind not in DECK or not weight.isdigit():
            p.error(f"--weights: {item!r} is not KIND=N with KIND one of {', '.join(DECK)}")
        a.deck[kind] = int(weight)
    if a.max_sessions <= 0:
        a.max_sessions = a.clients // 2 + 1
    seed = a.seed if a.seed is not None else random.getrandbits(32)
    random.seed(seed)

    tmp = tempfile.mkdtemp(prefix="headwise-soak-")
    ctx = os.path.join(tmp, "contexts")
    os.makedirs(os.path.join(ctx, "sub"))
    docs = []
    for i, key in enumerate(KEYS):
        name = f"doc{i}.txt"
        with open(os.path.join(ctx, name), "w") as f:
            f.write(passkey_document(key, repeats=30))
        docs.append((name, os.path.join(ctx, name), key))
    with open(os.path.join(tmp, "passkey.txt"), "w") as f:  # outside --context-dir
        f.write(passkey_document(12345))

    serve_args = ["-m", a.model, "--kv-block", "64", "--context-dir", ctx,
                  "--max-queue", str(a.max_queue)]
    log = os.path.join(tmp, "serve.log")
    server_cmd = ["mpirun", "-np", str(a.ranks), a.headwise, "serve", "--listen", "127.0.0.1:0",
                  *serve_args]
    print(f"soak: {' '.join(server_cmd)} (log {log})", flush=True)
    started_at = time.time()
    for attempt in range(3):  # a failed start may be a binary being rebuilt: retry
        server = Server(a.headwise, serve_args, log, mpi_ranks=a.ranks)
        if server.address is not None:
            break
        server.stop(signal.SIGKILL)
        time.sleep(5)

    def kill_server():  # on any way out: no cluster left behind
        if server.proc.poll() is None:
            try:
                os.killpg(server.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    atexit.register(kill_server)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if server.address is None:
        print("soak: the server did not start:\n" + open(log).read())
        return 1
    binary = binary_info(a.headwise)
    for _ in range(120):  # the binary may be being rebuilt: retry
        try:
            r = subprocess.run([a.headwise, "status", "--server", server.address, "--wait"],
                               capture_output=True, text=True, timeout=180)
            break
        except OSError:
            time.sleep(0.5)
    if r.returncode != 0:
        print("soak: the server is not ready:\n" + r.stdout + r.stderr + open(log).read())
        server.stop(signal.SIGKILL)
        return 1

    soak = Soak(a, server, docs, tmp)
    for _ in range(50):
        soak.pids = rank_pids(server.proc.pid)
        if len(soak.pids) == a.ranks:
            break
        time.sleep(0.2)
    before = soak.checkpoint("before")
    monitors = [threading.Thread(target=soak.rss_monitor, daemon=True),
                threading.Thread(target=soak.status_monitor, daemon=True)]
    for t in monitors:
        t.start()
    warm_s = a.duration * a.warmup
    print(f"soak: {a.clients} clients for {a.duration:.0f} s (warm-up {warm_s:.0f} s), "
          f"server {server.address}, ranks {soak.pids}, seed {seed}", flush=True)
    workload_start = time.monotonic()
    soak.prime()
    soak.run_phase(warm_s)
    warm = soak.checkpoint("after_warmup")
    soak.run_phase(a.duration - warm_s)
    workload_s = time.monotonic() - workload_start
    soak.monitor_stop.set()
    for t in monitors:
        t.join(timeout=a.hang_timeout + 10)
    end = soak.checkpoint("end")
    orphans = before["orphans"] + warm["orphans"] + end["orphans"]
    alive = server.proc.poll() is None
    stop_began = time.monotonic()
    stop_rc = server.stop(signal.SIGTERM, timeout=60)
    stop_s = time.monotonic() - stop_began
    serve_log = open(log).read()

    kinds, totals = summarize(soak.records)
    growth = {}
    middle = (warm["t"] + end["t"]) / 2
    for r, pid in sorted(soak.pids.items()):
        first = [s["rss_kib"][r] for s in soak.samples
                 if warm["t"] < s["t"] <= middle and s["rss_kib"].get(r)]
        second = [s["rss_kib"][r] for s in soak.samples
                  if s["t"] > middle and s["rss_kib"].get(r)]
        w, e = warm["clean"]["rss_kib"].get(r), end["clean"]["rss_kib"].get(r)
        if w is None or e is None:
            growth[r] = {"ok": False, "why": "process gone"}
            continue
        d_mib = (e - w) / 1024
        growth[r] = {"before_kib": before["rss_kib"].get(r), "after_warmup_kib": w,
                     "end_kib": e, "growth_mib": round(d_mib, 1),
                     "growth_frac": round((e - w) / w, 4),
                     "peak_sample_kib": max((s["rss_kib"].get(r) or 0) for s in soak.samples)
                     if soak.samples else None,
                     # A leak raises the high water; allocator churn does not.
                     "main_phase_max_kib": {"first_half": max(first, default=None),
                                            "second_half": max(second, default=None)},
                     "ok": d_mib < a.rss_bound_mib and (e - w) / w < a.rss_bound_frac}
    # Sessions of clients killed after their OpenSession returned are
    # legitimately open (the server sent their ids): when every orphan is
    # one of those, the pools are judged once they are closed.
    explained = len(orphans) <= soak.killed_after_open

    def settled(point):
        return (point.get("clean") or point)["host_kv_mib"] if explained else point["host_kv_mib"]

    pool_back = {r: {"before_mib": before["host_kv_mib"].get(r),
                     "after_warmup_mib": warm["host_kv_mib"].get(r),
                     "end_mib": end["host_kv_mib"].get(r),
                     "end_after_closing_orphans_mib": end["clean"]["host_kv_mib"].get(r),
                     "ok": settled(end).get(r) == before["host_kv_mib"].get(r)
                     and settled(warm).get(r) == before["host_kv_mib"].get(r)}
                 for r in sorted(set(before["host_kv_mib"]) | set(end["host_kv_mib"]))}
    ran = {k: kinds.get(k, {}).get("requests", 0) for k, w in a.deck.items() if w > 0}
    unexpected = [x for x in soak.anomalies if x["outcome"] not in ("HANG", "CLIENT_CRASH",
                                                                    "WRONG_ANSWER")]
    verdict = {
        "no_hangs": totals.get("HANG", 0) == 0,
        "no_client_crashes": totals.get("CLIENT_CRASH", 0) == 0,
        "expected_codes_only": not unexpected,
        "every_kind_ran": all(ran.values()),
        "answers_right": soak.wrong_answers == 0,
        "server_serving_at_end": alive and end["serving"],
        "no_orphan_sessions": len(orphans) <= soak.killed_after_open,
        "pool_back_to_before": bool(pool_back) and all(x["ok"] for x in pool_back.values()),
        "rss_growth_within_bound": bool(growth) and all(x["ok"] for x in growth.values()),
        "sigterm_ends_the_job": stop_rc is not None and "headwise serve: stopped" in serve_log,
    }
    verdict["pass"] = all(verdict.values())
    loads = [s["loadavg"][0] for s in soak.samples if s.get("loadavg")]
    coverage = {code: totals.get(code, 0) for code in
                ["OK", "RESOURCE_EXHAUSTED", "NOT_FOUND", "INVALID_ARGUMENT",
                 "PERMISSION_DENIED", "DEADLINE_EXCEEDED", "KILLED"]}
    result = {
        "benchmark": "soak",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started_at)),
        "machine": machine(),
        "command": [sys.executable, *sys.argv],
        "headwise": binary,
        "headwise_at_end": binary_info(a.headwise),
        "client_spawn_retries": soak.spawn_retries,
        "server_command": server_cmd,
        "seed": seed,
        "config": {"clients": a.clients, "duration_s": a.duration, "warmup_s": warm_s,
                   "ranks": a.ranks, "max_queue": a.max_queue, "max_sessions": a.max_sessions,
                   "kv_block": 64, "interval_s": a.interval, "think_s": a.think,
                   "hang_timeout_s": a.hang_timeout, "deck": a.deck,
                   "expected": {k: sorted(v) for k, v in EXPECTED.items()}},
        "workload_s": round(workload_s, 1),
        "requests": len(soak.records),
        "outcomes": totals,
        "codes_seen": coverage,
        "kinds": kinds,
        "rss_bound": {"mib": a.rss_bound_mib, "frac": a.rss_bound_frac,
                      "rule": "RSS at the end checkpoint minus RSS at the warm-up checkpoint "
                              "(both idle, no session open) < mib and < frac of the warm-up "
                              "value, for every rank"},
        "rss_growth": growth,
        "pool_host_kv_mib": pool_back,
        "orphan_sessions": orphans,
        "cancel_open_killed_after_open": soak.killed_after_open,
        "checkpoints": [before, warm, end],
        "loadavg": {"min": min(loads) if loads else None,
                    "mean": round(statistics.mean(loads), 2) if loads else None,
                    "max": max(loads) if loads else None},
        "rss_series": soak.samples,
        "status_series": soak.status_samples,
        "anomalies": soak.anomalies[:50],
        "anomaly_count": len(soak.anomalies),
        "server": {"stop_rc": stop_rc, "stop_s": round(stop_s, 1), "log": log,
                   "log_tail": serve_log[-3000:]},
        "verdict": verdict,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)

    print(f"soak: {len(soak.records)} requests in {workload_s:.0f} s, outcomes {totals}")
    for kind, k in kinds.items():
        p50 = f"{k['p50_s']:.2f}" if k["p50_s"] is not None else "-"
        p99 = f"{k['p99_s']:.2f}" if k["p99_s"] is not None else "-"
        print(f"  {kind:16s} {k['requests']:5d}  p50 {p50:>6s} s  p99 {p99:>6s} s  {k['outcomes']}")
    for r, g in growth.items():
        print(f"  rank {r}: RSS {g}")
    print(f"  host KV MiB before {before['host_kv_mib']} end {end['host_kv_mib']}"
          + (f", after closing the {len(end['orphans'])} orphan sessions "
             f"{end['clean']['host_kv_mib']}" if end["orphans"] else "")
          + f"; {len(orphans)} orphan sessions in all, "
          f"{soak.killed_after_open} cancel_open clients killed after their session opened")
    print(f"  load average {result['loadavg']}")
    for x in soak.anomalies[:10]:
        print(f"  anomaly: {json.dumps(x)[:600]}")
    print(f"soak: verdict {verdict}")
    print(f"soak: wrote {a.out}")
    return 0 if verdict["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
