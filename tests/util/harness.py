"""Shared pieces of the Python end-to-end tests (tests/e2e, tests/mpi): the
PASS/FAIL tally, the environment mpirun needs here (root, pml ob1), and the
passkey document the service tests and `make demo` ask about."""
import os

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
