"""`headwise serve --tls-cert --tls-key --auth-token-file` and its clients
end to end: with the CA and the token, status/generate/ask work; without the
token, or with a wrong one, every Inference RPC (unary, server-streaming,
the OpenSession stream) fails UNAUTHENTICATED; a plaintext client, or one
trusting only the system roots, cannot reach the TLS port (UNAVAILABLE);
the health check answers without a token; the clients' environment twins
work; a token without TLS is served on loopback only; half a TLS pair is
refused at start naming the missing flag. Exits 77 (skip) without the model
or openssl."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "util"))
from harness import Server, check, parse_args, passkey_document, run, summary  # noqa: E402

TOKEN = "hw-test-token-6f1c2a"
QUESTION = "What is the pass key? Answer with the number only."


def main():
    a = parse_args()
    if a is None:
        return 77
    if shutil.which("openssl") is None:
        print("SKIP: openssl not found (it makes the test certificate)")
        return 77
    hw = a.headwise
    tmp = tempfile.mkdtemp(prefix="headwise-auth-")
    cert, key = f"{tmp}/cert.pem", f"{tmp}/key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", key, "-out", cert], capture_output=True, text=True)
    check("openssl makes a self-signed certificate", made.returncode == 0, made.stderr)
    if made.returncode != 0:
        return summary()
    token, wrong, empty = f"{tmp}/token", f"{tmp}/wrong", f"{tmp}/empty"
    with open(token, "w") as f:
        f.write(f"  {TOKEN}  \n# anything after the first line is ignored\n")
    with open(wrong, "w") as f:
        f.write(TOKEN[:-1] + "x\n")
    open(empty, "w").close()
    doc = f"{tmp}/passkey.txt"
    with open(doc, "w") as f:
        f.write(passkey_document(71432, repeats=30))

    # Half a TLS pair, or a token in plaintext on a public address: refused
    # at start, before any model loads.
    r = run(hw, "serve", "-m", a.model, "--listen", "127.0.0.1:0", "--tls-cert", cert, timeout=60)
    check("serve --tls-cert without --tls-key exits non-zero naming --tls-key",
          r.returncode != 0 and "--tls-key" in r.stderr, r.stderr)
    r = run(hw, "serve", "-m", a.model, "--listen", "0.0.0.0:0", "--auth-token-file", token,
            timeout=60)
    check("serve: a token without TLS on 0.0.0.0 is refused naming --tls-cert",
          r.returncode != 0 and "--tls-cert" in r.stderr, r.stderr)
    r = run(hw, "serve", "-m", a.model, "--listen", "127.0.0.1:0", "--auth-token-file", empty,
            timeout=60)
    check("serve: an empty token file is refused", r.returncode != 0 and "empty" in r.stderr,
          r.stderr)

    server = Server(hw, ["-m", a.model, "--tls-cert", cert, "--tls-key", key,
                         "--auth-token-file", token], f"{tmp}/serve.log")
    check("TLS serve prints its port", server.address is not None, open(f"{tmp}/serve.log").read())
    if server.address is None:
        return summary()
    addr = server.address
    tls = ["--server", addr, "--tls-ca", cert]
    auth = [*tls, "--auth-token-file", token]

    # Health is open (load balancers probe it without a token); the model
    # behind it is not.
    r = run(hw, "status", *tls, "--wait", timeout=120)
    check("health answers without a token (status --wait: SERVING), the rest UNAUTHENTICATED",
          r.returncode == 1 and "SERVING" in r.stdout and "UNAUTHENTICATED" in r.stderr,
          r.stdout + r.stderr)
    r = run(hw, "status", *auth)
    check("status with the CA and the token", r.returncode == 0 and "model:" in r.stdout,
          r.stdout + r.stderr)
    log = open(f"{tmp}/serve.log").read()
    check("serve prints tls on, auth token on", "tls on, auth token on" in log, log)

    r = run(hw, "generate", *auth, "-p", "The capital of France is", "-n", "8")
    check("generate --server with the CA and the token", r.returncode == 0 and r.stdout.strip(),
          r.stdout + r.stderr)
    r = run(hw, "ask", *auth, "-f", doc, QUESTION, "-n", "16")
    check("ask --file (the OpenSession stream + Ask) with the token",
          r.returncode == 0 and "71432" in r.stdout, r.stdout + r.stderr[-400:])
    env = dict(os.environ, HEADWISE_TLS_CA=cert, HEADWISE_AUTH_TOKEN_FILE=token)
    r = subprocess.run([hw, "status", "--server", addr], capture_output=True, text=True,
                       timeout=60, env=env)
    check("HEADWISE_TLS_CA and HEADWISE_AUTH_TOKEN_FILE work for a client",
          r.returncode == 0 and "model:" in r.stdout, r.stdout + r.stderr)

    for name, creds in (("no token", []), ("a wrong token", ["--auth-token-file", wrong])):
        outcomes = {
            "generate": run(hw, "generate", *tls, *creds, "-p", "Hello", "-n", "4"),
            "ask --file": run(hw, "ask", *tls, *creds, "-f", doc, QUESTION, "-n", "4"),
            "ask --session": run(hw, "ask", *tls, *creds, "--session", "0", QUESTION),
            "close": run(hw, "close", *tls, *creds, "0"),
        }
        for rpc, r in outcomes.items():
            check(f"{rpc} with {name}: UNAUTHENTICATED",
                  r.returncode == 1 and "UNAUTHENTICATED" in r.stderr and not r.stdout.strip(),
                  r.stdout + r.stderr)
    r = run(hw, "status", *tls, "--auth-token-file", empty)
    check("a client with an empty token file fails naming it",
          r.returncode == 1 and "empty" in r.stderr and empty in r.stderr, r.stderr)

    r = run(hw, "status", "--server", addr, "--auth-token-file", token, "--wait-seconds", "2")
    check("a plaintext client against the TLS server: UNAVAILABLE",
          r.returncode == 1 and "UNAVAILABLE" in r.stderr, r.stdout + r.stderr)
    r = run(hw, "status", "--server", addr, "--tls", "--auth-token-file", token)
    check("--tls (system roots) does not trust the self-signed server: UNAVAILABLE",
          r.returncode == 1 and "UNAVAILABLE" in r.stderr, r.stdout + r.stderr)
    rc = server.stop(signal.SIGTERM)
    check("the TLS server drains and exits 0", rc == 0, f"rc={rc}")

    # A token without TLS: served on loopback (gRPC local credentials).
    local = Server(hw, ["-m", a.model, "--auth-token-file", token], f"{tmp}/serve_local.log")
    if local.address is None:
        check("token-only serve starts", False, open(f"{tmp}/serve_local.log").read())
    else:
        r = run(hw, "status", "--server", local.address, "--auth-token-file", token, "--wait",
                timeout=120)
        check("token without TLS on loopback: status with the token",
              r.returncode == 0 and "model:" in r.stdout, r.stdout + r.stderr)
        r = run(hw, "generate", "--server", local.address, "-p", "Hello", "-n", "4")
        check("token without TLS on loopback: generate without it is UNAUTHENTICATED",
              r.returncode == 1 and "UNAUTHENTICATED" in r.stderr, r.stderr)
        log = open(f"{tmp}/serve_local.log").read()
        check("serve prints tls off, auth token on", "tls off, auth token on" in log, log)
        local.stop(signal.SIGTERM)
    shutil.rmtree(tmp, ignore_errors=True)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
