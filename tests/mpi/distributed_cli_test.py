"""`headwise generate` distributed under mpirun on the real model (SmolLM2):
a ~2K-token prompt at 3 ranks in delegate mode (head-major) and pull mode
(striped) gives the
single-process run's greedy tokens and logits within 1e-4, with --stats-json
listing every rank; a memory rank killed (SIGKILL) or frozen (SIGSTOP)
mid-decode makes rank 0 fail UNAVAILABLE naming the rank within
--peer-timeout, and the job ends (nothing hangs). Exits 77 (skip) without the
model."""
import json
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "util"))
from harness import check, parse_args, mpi_env, summary  # noqa: E402


def logits(path):
    data = open(path, "rb").read()
    return struct.unpack(f"{len(data) // 4}f", data)


def rel_l2(a, b):
    num = sum((x - y) ** 2 for x, y in zip(a, b)) ** 0.5
    den = sum(x * x for x in a) ** 0.5
    return num / den


def rank_pid(mpirun_pid, rank):
    """The pid of MPI rank `rank` among mpirun's children."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status") as f:
                ppid = next(l for l in f if l.startswith("PPid:")).split()[1]
            if int(ppid) != mpirun_pid:
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
            if f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
                return int(pid)
        except (OSError, StopIteration):
            continue
    return None


def fault(a, prompt, sig, name):
    """Starts a 3-rank decode, sends `sig` to rank 2 once text streams, and
    returns (seconds from the signal to the job's end, rc, stderr)."""
    timeout = 3
    cmd = ["mpirun", "-np", "3", a.headwise, "generate", "-m", a.model, "-f", prompt,
           "-n", "500", "--ignore-eos", "--kv-block", "64", "--mode", "delegate",
           "--peer-timeout", str(timeout)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=mpi_env())
    first = proc.stdout.read(1)  # decode has started: text streams
    victim = rank_pid(proc.pid, 2)
    if not first or victim is None:
        proc.kill()
        return None, None, "no text or no rank 2"
    start = time.monotonic()
    os.kill(victim, sig)
    try:
        out, err = proc.communicate(timeout=timeout + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        os.kill(victim, signal.SIGKILL)
        return None, None, "hung"
    if sig == signal.SIGSTOP:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return time.monotonic() - start, proc.returncode, err.decode(errors="replace")


def main():
    a = parse_args()
    if a is None:
        return 77
    tmp = tempfile.mkdtemp(prefix="headwise-mpi-")
    rng = random.Random(3)
    words = ("the a of river mountain city light stone quiet north harbor ancient market "
             "bridge winter garden library clock tower").split()
    prompt = os.path.join(tmp, "prompt.txt")
    with open(prompt, "w") as f:
        f.write(" ".join(rng.choice(words) for _ in range(1500)))
        f.write(". Summarize the text above in one sentence:")

    common = ["-m", a.model, "-f", prompt, "-n", "8", "--kv-block", "64",
              "--prefill-chunk", "512"]
    ref = subprocess.run([a.headwise, "generate", *common, "--stats-json", f"{tmp}/ref.json",
                          "--dump-logits", f"{tmp}/ref.bin"], capture_output=True, text=True)
    check("single-process reference", ref.returncode == 0, ref.stderr[-500:])
    want = json.load(open(f"{tmp}/ref.json"))
    for mode, placement in (("delegate", "head-major"), ("pull", "striped")):
        r = subprocess.run(["mpirun", "-np", "3", a.headwise, "generate", *common, "--mode", mode,
                            "--placement", placement,
                            "--stats-json", f"{tmp}/{mode}.json", "--dump-logits",
                            f"{tmp}/{mode}.bin"], capture_output=True, text=True, env=mpi_env(),
                           timeout=600)
        check(f"3 ranks, {mode}: runs", r.returncode == 0, r.stderr[-800:])
        if r.returncode != 0:
            continue
        got = json.load(open(f"{tmp}/{mode}.json"))
        check(f"3 ranks, {mode}: same greedy tokens",
              got["generated_token_ids"] == want["generated_token_ids"],
              f'{got["generated_token_ids"]} vs {want["generated_token_ids"]}')
        err = rel_l2(logits(f"{tmp}/ref.bin"), logits(f"{tmp}/{mode}.bin"))
        check(f"3 ranks, {mode}: logits within 1e-4 ({err:.2e})", err < 1e-4)
        ranks = got["ranks"]
        check(f"3 ranks, {mode}: stats list every rank with its pool",
              [x["rank"] for x in ranks] == [0, 1, 2] and got["world_size"] == 3
              and all(x["tiers"]["host"]["peak_bytes"] > 0 for x in ranks[1:]), json.dumps(ranks))
        kv_from_1 = ranks[1]["bytes_sent"]
        pool_1 = ranks[1]["tiers"]["host"]["peak_bytes"]
        if mode == "delegate":
            check("delegate: memory ranks attend next to their KV, none is pulled",
                  ranks[1]["attention_bytes"] > 0 and got["bytes_pulled"] == 0,
                  json.dumps(ranks[1]))
        else:
            check("pull: the coordinator reads the memory ranks' KV",
                  kv_from_1 > pool_1 and ranks[1]["attention_bytes"] == 0, json.dumps(ranks[1]))

    for sig, what in ((signal.SIGKILL, "killed"), (signal.SIGSTOP, "frozen")):
        elapsed, rc, err = fault(a, prompt, sig, what)
        ok = (elapsed is not None and rc != 0 and "UNAVAILABLE" in err and "rank 2" in err
              and elapsed < 3 + 10)
        check(f"a {what} memory rank fails the request UNAVAILABLE within the timeout "
              f"({elapsed if elapsed is None else round(elapsed, 2)} s)", ok,
              f"rc={rc} stderr={err[-600:]}")

    return summary()


if __name__ == "__main__":
    sys.exit(main())
