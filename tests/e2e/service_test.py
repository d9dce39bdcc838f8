"""`headwise serve` and its clients end to end on the real model: readiness,
Generate equal to the local run, a passkey found through a session
(OpenSession + Ask), sessions reused without re-prefill and unchanged by
questions, errors as gRPC status codes (INVALID_ARGUMENT, NOT_FOUND,
PERMISSION_DENIED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED for a full queue),
a cancelled client leaving the server healthy, a 3-rank cluster under mpirun
answering the same, and a drain on SIGTERM. Exits 77 (skip) without the
model."""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "util"))
from harness import Server, check, parse_args, passkey_document, run, summary  # noqa: E402


QUESTION = "What is the pass key? Answer with the number only."


def main():
    a = parse_args()
    if a is None:
        return 77
    hw = a.headwise
    tmp = tempfile.mkdtemp(prefix="headwise-service-")
    ctx_dir = os.path.join(tmp, "contexts")
    os.makedirs(ctx_dir)
    doc = os.path.join(tmp, "passkey.txt")
    with open(doc, "w") as f:
        f.write(passkey_document(71432))
    with open(os.path.join(ctx_dir, "other.txt"), "w") as f:
        f.write(passkey_document(50815))

    server = Server(hw, ["-m", a.model, "--context-dir", ctx_dir, "--max-queue", "1"],
                    f"{tmp}/serve.log")
    check("serve prints its port", server.address is not None, open(f"{tmp}/serve.log").read())
    if server.address is None:
        return 1
    addr = server.address
    r = run(hw, "status", "--server", addr, "--wait")
    check("status --wait: ready", r.returncode == 0 and "SERVING" in r.stdout, r.stdout + r.stderr)
    log = open(f"{tmp}/serve.log").read()
    check("serve prints its configuration and KV capacity",
          "KV capacity: 8192 tokens" in log and "placement" in log, log)

    # Generate over gRPC == the local run (greedy).
    r = run(hw, "generate", "--server", addr, "-p", "The capital of France is", "-n", "12",
            "--stats-json", f"{tmp}/remote.json")
    local = run(hw, "generate", "-m", a.model, "-p", "The capital of France is", "-n", "12",
                "--stats-json", f"{tmp}/local.json")
    ok = r.returncode == 0 and local.returncode == 0
    check("generate --server streams the local run's tokens",
          ok and json.load(open(f"{tmp}/remote.json"))["generated_token_ids"]
          == json.load(open(f"{tmp}/local.json"))["generated_token_ids"], r.stderr + local.stderr)

    # Per-request policies: named in the stats; covering everything they are
    # exact; a quantkv session still finds the passkey; bad knobs refused.
    for kind in ("keys", "bounds"):
        r = run(hw, "generate", "--server", addr, "-p", "The capital of France is", "-n", "12",
                "--policy", "hybrid", "--hybrid-budget", "1", "--hybrid-summary", kind,
                "--stats-json", f"{tmp}/hybrid.json")
        stats = json.load(open(f"{tmp}/hybrid.json")) if r.returncode == 0 else {}
        check(f"a hybrid request ({kind}) covering everything answers like exact, and says so",
              stats.get("generated_token_ids") == json.load(open(f"{tmp}/local.json"))[
                  "generated_token_ids"]
              and stats.get("policy", "").startswith(f"hybrid(budget=1, summary={kind}"),
              r.stderr + str(stats.get("policy")))
    r = run(hw, "ask", "--server", addr, "-f", doc, QUESTION, "-n", "16", "--policy", "quantkv",
            "--kv-budget", "0.5", "--window-tokens", "64")
    check("ask --policy quantkv finds the passkey", r.returncode == 0 and "71432" in r.stdout,
          r.stdout + r.stderr[-400:])
    r = run(hw, "generate", "--server", addr, "-p", "Hi", "--policy", "quantkv",
            "--quantkv-tau", "2")
    check("a bad policy knob: refused naming it", r.returncode == 1 and "tau" in r.stderr,
          r.stderr)

    # A passkey through a session opened from a streamed file.
    r = run(hw, "ask", "--server", addr, "-f", doc, QUESTION, "-n", "16")
    check("ask --file finds the passkey", r.returncode == 0 and "71432" in r.stdout,
          r.stdout + r.stderr[-400:])
    check("ask shows prefill progress", "prefill" in r.stderr and "tok/s" in r.stderr, r.stderr)

    # A kept session: asked twice, the same answer; listed; a server-side file.
    r = run(hw, "ask", "--server", addr, "--server-file", "other.txt", "--keep-session",
            QUESTION, "-n", "16")
    m = re.search(r"session: ([0-9a-f]+)", r.stderr)
    check("ask --server-file --keep-session", r.returncode == 0 and m is not None
          and "50815" in r.stdout, r.stdout + r.stderr[-400:])
    session = m.group(1) if m else "none"
    first = r.stdout
    r1 = run(hw, "ask", "--server", addr, "--session", session, QUESTION, "-n", "16")
    r2 = run(hw, "ask", "--server", addr, "--session", session, QUESTION, "-n", "16")
    check("a session answers the same twice (its context is unchanged)",
          r1.returncode == 0 and r1.stdout == r2.stdout == first, r1.stdout + "|" + r2.stdout)
    check("asking a session does not re-prefill", "prefill [" not in r1.stderr, r1.stderr)
    st = run(hw, "status", "--server", addr)
    check("status lists the session", session in st.stdout and "context tokens" in st.stdout,
          st.stdout)

    # Errors as gRPC status codes.
    r = run(hw, "generate", "--server", addr, "-p", "hi", "--top-p", "2")
    check("bad sampling: INVALID_ARGUMENT", r.returncode == 1 and "INVALID_ARGUMENT" in r.stderr,
          r.stderr)
    long_prompt = os.path.join(tmp, "long.txt")
    with open(long_prompt, "w") as f:
        f.write("word " * 9000)
    r = run(hw, "generate", "--server", addr, "-f", long_prompt, "-n", "4")
    check("prompt past the context: INVALID_ARGUMENT with the numbers",
          r.returncode == 1 and "INVALID_ARGUMENT" in r.stderr and "8192" in r.stderr, r.stderr)
    r = run(hw, "ask", "--server", addr, "--session", "0123456789abcdef", QUESTION)
    check("unknown session: NOT_FOUND", r.returncode == 1 and "NOT_FOUND" in r.stderr, r.stderr)
    r = run(hw, "ask", "--server", addr, "--server-file", "../passkey.txt", QUESTION)
    check("a path outside --context-dir: PERMISSION_DENIED",
          r.returncode == 1 and "PERMISSION_DENIED" in r.stderr, r.stderr)
    r = run(hw, "ask", "--server", addr, "--session", session, "--timeout", "0.05",
            "Tell me a long story about the pass key.", "-n", "200", "--ignore-eos")
    check("a deadline: DEADLINE_EXCEEDED", r.returncode == 1 and "DEADLINE_EXCEEDED" in r.stderr,
          r.stderr)
    # A client that goes away mid-answer.
    p = subprocess.Popen([hw, "ask", "--server", addr, "--session", session, "--ignore-eos",
                          "-n", "400", "Tell me a long story."], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.read(1)
    p.kill()
    p.wait()
    r = run(hw, "ask", "--server", addr, "--session", session, QUESTION, "-n", "16")
    check("after a deadline and a cancelled client the session still answers the same",
          r.returncode == 0 and r.stdout == first, r.stdout + r.stderr)

    # A full queue: one running, one waiting (--max-queue 1), the rest refused.
    procs = [subprocess.Popen([hw, "generate", "--server", addr, "-p", "Count to one hundred:",
                               "-n", "120", "--ignore-eos"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [q.communicate(timeout=300)[1] for q in procs]
    refused = sum("RESOURCE_EXHAUSTED" in e for e in errors)
    check(f"a full queue: RESOURCE_EXHAUSTED ({refused} of 4 refused)",
          1 <= refused <= 2 and all(("RESOURCE_EXHAUSTED" in e) or q.returncode == 0
                                    for e, q in zip(errors, procs)), "\n".join(errors))

    r = run(hw, "close", "--server", addr, session)
    st = run(hw, "status", "--server", addr)
    check("close: the session is gone", r.returncode == 0 and session not in st.stdout,
          st.stdout + r.stderr)
    rc = server.stop(signal.SIGTERM)
    check("SIGTERM drains and exits 0", rc == 0 and "stopped" in open(f"{tmp}/serve.log").read(),
          f"rc={rc}")

    # A 3-rank cluster: the same passkey over gRPC, every rank reported.
    cluster = Server(hw, ["-m", a.model, "--kv-block", "64"], f"{tmp}/serve3.log", mpi_ranks=3)
    if cluster.address is None:
        check("3-rank serve starts", False, open(f"{tmp}/serve3.log").read())
    else:
        r = run(hw, "status", "--server", cluster.address, "--wait")
        r = run(hw, "ask", "--server", cluster.address, "-f", doc, QUESTION, "-n", "16")
        check("3 ranks: ask --file finds the passkey", r.returncode == 0 and "71432" in r.stdout,
              r.stdout + r.stderr[-400:])
        st = run(hw, "status", "--server", cluster.address)
        ranks = re.findall(r"^rank (\d) .*peak ([0-9.]+) MiB", st.stdout, re.M)
        check("3 ranks: status reports every rank's KV",
              [x[0] for x in ranks] == ["0", "1", "2"] and all(float(x[1]) > 0 for x in ranks[1:]),
              st.stdout)
        rc = cluster.stop(signal.SIGTERM)
        check("3 ranks: SIGTERM ends the job", rc is not None, f"rc={rc}")

    # A memory rank lost while serving: requests fail UNAVAILABLE naming it
    # within --peer-timeout, readiness turns NOT_SERVING, rank 0 stays up.
    # (mpirun --enable-recovery keeps the other ranks when one dies.)
    cluster = Server(hw, ["-m", a.model, "--kv-block", "64", "--peer-timeout", "3"],
                     f"{tmp}/serve_lost.log", mpi_ranks=3, mpi_args=("--enable-recovery",))
    if cluster.address is None:
        check("3-rank serve (recovery) starts", False, open(f"{tmp}/serve_lost.log").read())
    else:
        run(hw, "status", "--server", cluster.address, "--wait")
        victim = None
        for pid in os.listdir("/proc"):
            try:
                env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
                cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
            except OSError:
                continue
            if b"OMPI_COMM_WORLD_RANK=2" in env and b"serve" in cmdline and \
                    cluster.address.split(":")[1].encode() not in cmdline:
                victim = int(pid)
        if victim is not None:
            os.kill(victim, signal.SIGKILL)
        start = time.monotonic()
        r = run(hw, "ask", "--server", cluster.address, "-f", doc, QUESTION, "-n", "16")
        elapsed = time.monotonic() - start
        check(f"a lost rank: UNAVAILABLE naming it ({elapsed:.1f} s)",
              victim is not None and r.returncode == 1 and "UNAVAILABLE" in r.stderr
              and "rank 2" in r.stderr and elapsed < 60, r.stderr[-600:])
        st = run(hw, "status", "--server", cluster.address)
        check("a lost rank: readiness NOT_SERVING, rank 0 still answers",
              "NOT_SERVING" in st.stdout, st.stdout + st.stderr)
        cluster.stop(signal.SIGKILL, timeout=30)

    return summary()


if __name__ == "__main__":
    sys.exit(main())
