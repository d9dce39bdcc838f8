"""Shared pieces of the Python end-to-end tests (tests/e2e, tests/mpi): the
PASS/FAIL tally, the environment mpirun needs here (root, pml ob1), and the
passkey document the service tests and `make demo` ask about, and a
`headwise serve` (or `mpirun ... headwise serve`) process to test against."""
import os
import re
import signal
import subprocess
import time

_tally = {"passed": 0, "failed": 0}


def check(name, ok, detail=""):
    """Records and prints one assertion."""
    if ok:
        _tally["passed"] += 1
        print(f"PASS {name}", flush=True)
    else:
        _tally["failed"] += 1
        print(f"FAIL {name}: {detail}", flush=True)


def summary():
    """Prints the tally; the exit code for main()."""
    print(f"{_tally['passed']} passed, {_tally['failed']} failed")
    return 1 if _tally["failed"] else 0


def mpi_env():
    env = dict(os.environ)
    env.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                "OMPI_MCA_pml": "ob1", "OMPI_MCA_btl": "self,vader",
                "OMPI_MCA_rmaps_base_oversubscribe": "1"})
    return env


def passkey_document(key, repeats=60):
    """Filler text with the pass key at 40% depth (scripts/demo writes the same)."""
    filler = ("The grass is green. The sky is blue. The sun is yellow. Here we go. "
              "There and back again. ")
    parts = ["There is an important piece of information hidden inside a lot of irrelevant "
             "text. Find it and memorize it. I will quiz you about it.\n"] + [filler] * repeats
    parts.insert(repeats * 2 // 5, f"The pass key is {key}. Remember it. {key} is the pass key. ")
    return "".join(parts)


def parse_args():
    """--headwise BINARY --model GGUF; None (after printing SKIP) when the
    model is missing: the caller returns 77, ctest's skip code."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--headwise", required=True)
    parser.add_argument("--model", required=True)
    a = parser.parse_args()
    if not os.path.exists(a.model):
        print(f"SKIP: {a.model} not found: run scripts/fetch-model")
        return None
    return a


class Server:
    """`headwise serve --listen 127.0.0.1:0 ARGS` (under `mpirun -np N` when
    mpi_ranks), in its own process group; `address` is set once it printed
    its port (None if it never did within 120 s)."""

    def __init__(self, hw, args, log, mpi_ranks=0, mpi_args=()):
        cmd = [hw, "serve", "--listen", "127.0.0.1:0", *args]
        if mpi_ranks:
            cmd = ["mpirun", *mpi_args, "-np", str(mpi_ranks), *cmd]
        self.log = log
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                                     env=mpi_env(), start_new_session=True)
        self.address = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.proc.poll() is None:
            m = re.search(r"\(port (\d+)\)", open(log).read())
            if m:
                self.address = f"127.0.0.1:{m.group(1)}"
                break
            time.sleep(0.1)

    def stop(self, sig=signal.SIGTERM, timeout=60):
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return None


def run(*cmd, timeout=600):
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
