"""The disk tier end to end on the real model: `generate` with a host budget
so small most KV is on disk gives the all-resident run's greedy tokens on one
rank and on 3 ranks (near-storage `delegate` and fetch `pull`); a full disk is
RESOURCE_EXHAUSTED with the numbers; a 3-rank `serve` answers a passkey from
a session spilled to disk, reports every rank's disk tier, persists the
session (`close --persist`), is killed, comes back with `--restore` and
answers the same; a flipped byte in a saved block file makes the restore fail
naming the rank, the block and the file. Exits 77 (skip) without the model."""
import json
import os
import re
import shutil
import signal
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "util"))
from harness import Server, check, mpi_env, parse_args, passkey_document, run, summary  # noqa: E402

QUESTION = "What is the pass key? Answer with the number only."


def tokens(path):
    return json.load(open(path))["generated_token_ids"]


def mpirun(ranks, *cmd):
    import subprocess
    return subprocess.run(["mpirun", "-np", str(ranks), *cmd], capture_output=True, text=True,
                          timeout=600, env=mpi_env())


def main():
    a = parse_args()
    if a is None:
        return 77
    hw = a.headwise
    tmp = tempfile.mkdtemp(prefix="headwise-disk-")
    disk = os.path.join(tmp, "disk")
    snapshots = os.path.join(tmp, "snapshots")
    doc = os.path.join(tmp, "passkey.txt")
    with open(doc, "w") as f:
        f.write(passkey_document(58213))
    # ~1.2K tokens of 64-token f32 blocks: ~55 MiB of KV; 8 MiB of host pool
    # per rank leaves most of it on the disks.
    small = ["--kv-block", "64", "--prefill-chunk", "512", "--host-mem", "8MiB",
             "--disk-dir", disk, "--disk-mem", "256MiB"]

    r = run(hw, "generate", "-m", a.model, "-f", doc, "-n", "12", "--kv-block", "64",
            "--stats-json", f"{tmp}/resident.json")
    check("all-resident reference run", r.returncode == 0, r.stderr[-400:])
    r = run(hw, "generate", "-m", a.model, "-f", doc, "-n", "12", *small,
            "--stats-json", f"{tmp}/disk1.json")
    ok = r.returncode == 0
    check("1 rank, KV mostly on disk: the all-resident tokens",
          ok and tokens(f"{tmp}/disk1.json") == tokens(f"{tmp}/resident.json"), r.stderr[-400:])
    if ok:
        tiers = json.load(open(f"{tmp}/disk1.json"))["ranks"][0]["tiers"]
        check("1 rank: stats report the disk tier (peak > host peak, reads > 0)",
              tiers["disk"]["peak_bytes"] > tiers["host"]["peak_bytes"]
              and tiers["disk"]["bytes_read"] > 0 and tiers["disk"]["read_gbps"] > 0, str(tiers))
    for mode in ("delegate", "pull"):
        r = mpirun(3, hw, "generate", "-m", a.model, "-f", doc, "-n", "12", *small,
                   "--mode", mode, "--stats-json", f"{tmp}/disk3{mode}.json")
        ok = r.returncode == 0
        check(f"3 ranks ({mode}), KV mostly on disks: the all-resident tokens",
              ok and tokens(f"{tmp}/disk3{mode}.json") == tokens(f"{tmp}/resident.json"),
              r.stderr[-600:])
        if ok:
            stats = json.load(open(f"{tmp}/disk3{mode}.json"))
            on_disk = [rk["tiers"].get("disk", {}).get("peak_bytes", 0) for rk in stats["ranks"]]
            check(f"3 ranks ({mode}): every rank's disk holds KV", all(b > 0 for b in on_disk),
                  str(on_disk))
            if mode == "pull":
                check("pull: memory ranks' disk blocks are fetched to rank 0",
                      stats["bytes_fetched"] > 0, str(stats["bytes_fetched"]))
    r = run(hw, "generate", "-m", a.model, "-f", doc, "-n", "4", "--kv-block", "64",
            "--prefill-chunk", "512", "--host-mem", "8MiB", "--disk-dir", disk,
            "--disk-mem", "1MiB")
    check("a full disk: RESOURCE_EXHAUSTED with the numbers",
          r.returncode == 1 and "full" in r.stderr and "disk" in r.stderr, r.stderr[-400:])

    # A session spilled to the disks, persisted, the cluster killed, restored.
    serve = [*small, "-m", a.model, "--snapshot-dir", snapshots]
    cluster = Server(hw, serve, f"{tmp}/serve.log", mpi_ranks=3)
    if cluster.address is None:
        check("3-rank serve with a disk tier starts", False, open(f"{tmp}/serve.log").read())
        return summary()
    run(hw, "status", "--server", cluster.address, "--wait")
    r = run(hw, "ask", "--server", cluster.address, "-f", doc, "--keep-session", QUESTION,
            "-n", "16")
    m = re.search(r"session: ([0-9a-f]+)", r.stderr)
    check("3 ranks: ask finds the passkey in a session spilled to disk",
          r.returncode == 0 and m is not None and "58213" in r.stdout, r.stdout + r.stderr[-400:])
    session = m.group(1) if m else "none"
    answer = r.stdout
    st = run(hw, "status", "--server", cluster.address)
    disks = re.findall(r"^rank (\d) .*disk KV ([0-9.]+) MiB", st.stdout, re.M)
    check("status reports every rank's disk tier",
          [d[0] for d in disks] == ["0", "1", "2"] and all(float(d[1]) > 0 for d in disks),
          st.stdout)
    r = run(hw, "close", "--server", cluster.address, "--persist", session)
    saved = os.path.join(snapshots, session)
    files = sorted(os.listdir(saved)) if os.path.isdir(saved) else []
    check("close --persist writes every rank's block file and the session table",
          r.returncode == 0 and files == ["rank0.kv", "rank1.kv", "rank2.kv", "session.json"],
          r.stderr + str(files))
    cluster.stop(signal.SIGKILL, timeout=30)

    cluster = Server(hw, [*serve, "--restore"], f"{tmp}/restore.log", mpi_ranks=3)
    if cluster.address is None:
        check("serve --restore starts", False, open(f"{tmp}/restore.log").read())
        return summary()
    run(hw, "status", "--server", cluster.address, "--wait")
    log = open(f"{tmp}/restore.log").read()
    check("serve --restore reopens the session", f"restored session {session}" in log, log)
    r = run(hw, "ask", "--server", cluster.address, "--session", session, QUESTION, "-n", "16")
    check("after kill + restore the session answers the same",
          r.returncode == 0 and r.stdout == answer, r.stdout + r.stderr[-400:])
    r = run(hw, "close", "--server", cluster.address, "--persist", session)
    check("the restored session persists again", r.returncode == 0, r.stderr)
    cluster.stop(signal.SIGTERM)

    # A flipped byte in rank 1's block file: the restore names it.
    path = os.path.join(saved, "rank1.kv")
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) - 100)
        byte = f.read(1)
        f.seek(os.path.getsize(path) - 100)
        f.write(bytes([byte[0] ^ 0x5A]))
    cluster = Server(hw, [*serve, "--restore"], f"{tmp}/corrupt.log", mpi_ranks=3)
    rc = cluster.stop(signal.SIGTERM, timeout=120) if cluster.proc.poll() is None else \
        cluster.proc.returncode
    cluster.proc.wait(timeout=120)
    log = open(f"{tmp}/corrupt.log").read()
    check("a corrupt block file: the restore fails naming rank, block and file",
          cluster.proc.returncode != 0 and "rank 1" in log and "rank1.kv" in log
          and "layer " in log and "checksum" in log, f"rc={rc} " + log[-800:])
    shutil.rmtree(tmp, ignore_errors=True)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
