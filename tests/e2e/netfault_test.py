"""Network faults between real "hosts": a 3-rank `headwise serve` with one
rank per network namespace (scripts/netns-cluster, UCX over tcp through
veths). With nftables dropping 5% of the memory ranks' packets during
prefill and decode, a passkey question still gets the fault-free answer
(tcp retransmits; nothing is lost or reordered above it).

The loss rate and --peer-timeout are chosen together: a segment whose
retransmissions are lost too backs off 0.2, 0.4, 0.8, 1.6, 3.2 s..., so a
call stalls past 10 s only if one segment is lost six times in a row
(0.05^6 = 1.6e-8 per segment, ~30K segments per question). At 10% loss with
a 4 s timeout (five in a row, 1e-5) the lossy question failed in CI. With rank 2's
link cut mid-request (every packet dropped), that request fails
UNAVAILABLE naming rank 2 within --peer-timeout, readiness turns
NOT_SERVING, and rank 0 stays up and keeps answering status. Exits 77
(skip) without the model or where namespaces are not permitted."""
import fcntl
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "util"))
from harness import check, mpi_env, parse_args, passkey_document, summary  # noqa: E402

CLUSTER = os.path.join(here, "..", "..", "scripts", "netns-cluster")
QUESTION = "What is the pass key? Answer with the number only."
PEER_TIMEOUT = 10
LOSS_PERCENT = 5
ENV = {**mpi_env(), "HW_NETNS_PREFIX": "hwf", "HW_NETNS_SUBNET": "10.80.0",
       "HW_NETNS_STATE": "/run/headwise-netns/hwf"}
for key in ("OMPI_MCA_btl", "OMPI_MCA_pml", "OMPI_MCA_rmaps_base_oversubscribe"):
    ENV.pop(key, None)  # the namespace arguments choose them


def sh(*cmd, timeout=120):
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=ENV)


def in_ns(rank, *cmd, timeout=300):
    return sh("ip", "netns", "exec", f"hwf-ns{rank}", *cmd, timeout=timeout)


def nft(rank, *rule):
    return in_ns(rank, "nft", *rule, timeout=10)


def drop(rank, percent):
    """Drops `percent`% of rank's packets both ways (a fresh rule set)."""
    nft(rank, "delete", "table", "inet", "hwfault")
    nft(rank, "add", "table", "inet", "hwfault")
    for hook in ("input", "output"):
        nft(rank, "add", "chain", "inet", "hwfault", hook,
            f"{{ type filter hook {hook} priority 0; }}")
        rule = ["drop"] if percent >= 100 else ["numgen", "random", "mod", "100", "<",
                                                str(percent), "drop"]
        r = nft(rank, "add", "rule", "inet", "hwfault", hook,
                "iifname" if hook == "input" else "oifname", "hwveth", *rule)
        if r.returncode != 0:
            return r.stderr
    return ""


def main():
    a = parse_args()
    if a is None:
        return 77
    r = sh(CLUSTER, "check")
    if r.returncode != 0:
        print(f"SKIP: network namespaces are not available here: {r.stdout}{r.stderr}")
        return 77
    if subprocess.run(["which", "nft"], capture_output=True).returncode != 0:
        print("SKIP: no nft (apt-get install nftables)")
        return 77
    os.makedirs("/run/lock", exist_ok=True)
    lock = open("/run/lock/headwise-netns-test.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    tmp = tempfile.mkdtemp(prefix="headwise-netfault-")
    doc = os.path.join(tmp, "passkey.txt")
    with open(doc, "w") as f:
        f.write(passkey_document(40617))
    sh(CLUSTER, "down")
    server = None
    try:
        r = sh(CLUSTER, "up", "3")
        if r.returncode != 0:
            check("3 namespaces come up", False, r.stderr)
            return summary()
        args = r.stdout.split()
        log = os.path.join(tmp, "serve.log")
        server = subprocess.Popen(
            ["mpirun", "--allow-run-as-root", "--oversubscribe", "--enable-recovery", *args,
             a.headwise, "serve", "-m", a.model, "--kv-block", "64", "--listen", "127.0.0.1:0",
             "--peer-timeout", str(PEER_TIMEOUT)],
            stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=ENV, start_new_session=True)
        port = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None and port is None:
            m = re.search(r"\(port (\d+)\)", open(log).read())
            port = m.group(1) if m else None
            time.sleep(0.2)
        check("serve starts with one rank per namespace", port is not None, open(log).read())
        if port is None:
            return summary()
        addr = f"127.0.0.1:{port}"
        # Clients run in rank 0's namespace, where it listens.
        in_ns(0, a.headwise, "status", "--server", addr, "--wait", "--wait-seconds", "120")
        r = in_ns(0, a.headwise, "ask", "--server", addr, "-f", doc, QUESTION, "-n", "16")
        check("fault-free: the passkey", r.returncode == 0 and "40617" in r.stdout,
              r.stdout + r.stderr[-400:])
        clean = r.stdout

        err = drop(1, LOSS_PERCENT) + drop(2, LOSS_PERCENT)
        check(f"nftables drops {LOSS_PERCENT}% of ranks 1 and 2's packets", err == "", err)
        start = time.monotonic()
        r = in_ns(0, a.headwise, "ask", "--server", addr, "-f", doc, QUESTION, "-n", "16")
        lossy = time.monotonic() - start
        check(f"{LOSS_PERCENT}% packet loss: the same answer ({lossy:.1f} s)",
              r.returncode == 0 and r.stdout == clean, r.stdout + r.stderr[-400:])
        nft(1, "delete", "table", "inet", "hwfault")
        nft(2, "delete", "table", "inet", "hwfault")

        # Rank 2's link cut while a long answer is being generated.
        ask = subprocess.Popen(
            ["ip", "netns", "exec", "hwf-ns0", a.headwise, "ask", "--server", addr, "-f", doc,
             "Tell me a very long story about the pass key.", "-n", "400", "--ignore-eos"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        time.sleep(4)  # past the prefill, into the decode
        cut = time.monotonic()
        err = drop(2, 100)
        try:
            out, errs = ask.communicate(timeout=PEER_TIMEOUT * 10 + 60)
        except subprocess.TimeoutExpired:
            ask.kill()
            out, errs = ask.communicate()
        failed_after = time.monotonic() - cut
        check(f"a cut link: the running request fails UNAVAILABLE naming rank 2 "
              f"({failed_after:.1f} s after the cut, --peer-timeout {PEER_TIMEOUT})",
              err == "" and ask.returncode == 1 and "UNAVAILABLE" in errs and "rank 2" in errs
              and failed_after < PEER_TIMEOUT + 10, f"rc={ask.returncode} {err} {errs[-600:]}")
        st = in_ns(0, a.headwise, "status", "--server", addr, timeout=60)
        check("after the cut: readiness NOT_SERVING, rank 0 still answers",
              "NOT_SERVING" in st.stdout, st.stdout + st.stderr)
        check("rank 0 is still running", server.poll() is None, f"rc={server.poll()}")
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        sh(CLUSTER, "down")
    return summary()


if __name__ == "__main__":
    sys.exit(main())
