"""TLS on the agent's doors (issue 10, first part): real clients over loopback with a CA made at test time by
openssl (no key is committed). Covered: TLS 1.3 by default with ALPN, every door (httpx, the openai SDK, websockets
over wss://, grpcio secure channel), TLS 1.2 refused unless enabled, certificate rotation by a symlink swap (as
kubelet does) with open streams untouched, a corrupt replacement keeping the old pair, and mutual TLS."""
from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
import time
from pathlib import Path

import grpc
import httpx
import pytest
from openai import OpenAI
from websockets.sync.client import connect

from gateway_fixtures import *  # noqa: F401,F403
from gateway_fixtures import AGENT_BIN, Agent, free_port, manifests, wav
from test_gateway_grpc import pb, stream_requests  # noqa: F401 - fixture
from test_gateway_ws import auth, start

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="openssl is installed by tests/tools/setup.sh")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_ca(d: Path, name: str) -> None:
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=d)
    openssl("req", "-x509", "-new", "-key", f"{name}.key", "-days", "2", "-subj", f"/CN={name}", "-out",
            f"{name}.pem", cwd=d)


def issue(d: Path, ca: str, name: str, *, server: bool, serial: int, days: str = "2") -> None:
    """An ECDSA P-256 certificate `name.pem` (+ `name.key`) signed by `ca`."""
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=d)
    openssl("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={name}", "-out", f"{name}.csr", cwd=d)
    ext = d / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n" if server
                   else "extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-set_serial",
            str(serial), "-days", days, "-extfile", ext.name, "-out", f"{name}.pem", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    issue(d, "ca", "server", server=True, serial=1001)
    issue(d, "ca", "server2", server=True, serial=2002)
    make_ca(d, "client-ca")
    issue(d, "client-ca", "client", server=False, serial=3003)
    make_ca(d, "rogue-ca")
    issue(d, "rogue-ca", "rogue", server=False, serial=4004)
    # `-days 0`: valid until the moment it was signed, so expired by the time a test uses it.
    issue(d, "client-ca", "expired", server=False, serial=5005, days="0")
    return d


def tls_agent(upstream, tmp, pki, *extra):
    return Agent(manifests(upstream), tmp=tmp,
                 extra_args=["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"), *extra])


def https(a) -> str:
    return f"https://127.0.0.1:{a.http_port}"


def served_serial(a, ca: Path) -> int:
    """The serial of the certificate a new connection sees."""
    context = ssl.create_default_context(cafile=str(ca))
    import socket
    with socket.create_connection(("127.0.0.1", a.http_port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
    out = subprocess.run([OPENSSL, "x509", "-inform", "DER", "-noout", "-serial"], input=der, capture_output=True,
                         check=True).stdout.decode()
    return int(out.strip().split("=")[1], 16)


def s_client(port: int, ca: Path, *args: str) -> str:
    proc = subprocess.run([OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(ca), *args],
                          input=b"", capture_output=True, timeout=20)
    return proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


def test_every_door_speaks_tls_13(upstream, tmp_path, pki, pb):  # noqa: F811
    a = tls_agent(upstream, tmp_path, pki)
    try:
        key, ca = a.key("app"), str(pki / "ca.pem")
        with httpx.Client(verify=ssl.create_default_context(cafile=ca), timeout=10) as client:
            r = client.get(f"{https(a)}/v1/models", headers={"authorization": f"Bearer {key}"})
            assert r.status_code == 200 and r.extensions["http_version"] in (b"HTTP/1.1", b"HTTP/2")
            sdk = OpenAI(base_url=f"{https(a)}/v1", api_key=key, http_client=client)
            text = sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav(0.2))).text
            assert text.startswith("heard ")
        context = ssl.create_default_context(cafile=ca)
        with connect(f"wss://127.0.0.1:{a.http_port}/v1/stream", ssl=context, additional_headers=auth(key)) as ws:
            assert start(ws)["type"] == "ready"
        credentials = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.pem").read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{a.grpc_port}", credentials) as channel:
            stub = pb[1].InferenceStub(channel)
            models = stub.ListModels(pb[0].ListModelsRequest(), metadata=(("authorization", f"Bearer {key}"),),
                                     timeout=10)
            assert "whisper-1" in [m.id for m in models.models]
        # grpcurl with the CA, as an operator would debug it.
        from test_gateway_grpc import PROTO_DIR, ROOT as GRPC_ROOT
        exe = shutil.which("grpcurl") or str(GRPC_ROOT / ".venv" / "bin" / "grpcurl")
        out = subprocess.run([exe, "-cacert", ca, "-import-path", str(PROTO_DIR), "-proto", "infergate/v1/inference.proto",
                              "-H", f"authorization: Bearer {key}", "-d", "{}", f"127.0.0.1:{a.grpc_port}",
                              "infergate.v1.Inference/ListModels"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and "whisper-1" in out.stdout, out.stderr
        # Plain HTTP on the TLS port is not served.
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{a.http_port}/v1/models", timeout=3)
    finally:
        a.stop()


def test_openssl_sees_tls_13_with_alpn_and_tls_12_is_refused(upstream, tmp_path, pki):
    a = tls_agent(upstream, tmp_path, pki)
    try:
        out = s_client(a.http_port, pki / "ca.pem", "-alpn", "h2,http/1.1")
        assert "TLSv1.3" in out and "ALPN protocol: h2" in out, out[-800:]
        assert "Verify return code: 0 (ok)" in out, out[-800:]
        out = s_client(a.grpc_port, pki / "ca.pem", "-alpn", "h2")
        assert "TLSv1.3" in out and "ALPN protocol: h2" in out, out[-800:]
        for old in ("-tls1_2", "-tls1_1"):
            out = s_client(a.http_port, pki / "ca.pem", old)
            assert "Cipher is (NONE)" in out or "alert protocol version" in out or "no protocols available" in out, (
                old, out[-800:])
    finally:
        a.stop()
    (tmp_path / "v12").mkdir()
    b = tls_agent(upstream, tmp_path / "v12", pki, "--tls-min-version", "1.2")
    try:
        out = s_client(b.http_port, pki / "ca.pem", "-tls1_2")
        assert "TLSv1.2" in out and "Verify return code: 0 (ok)" in out, out[-800:]
    finally:
        b.stop()


def test_rotation_by_symlink_swap_keeps_open_streams(upstream, tmp_path, pki, pb):  # noqa: F811
    # The kubelet's layout: tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>/; a renewal swaps ..data.
    mount = tmp_path / "tls"
    first, second = mount / "..v1", mount / "..v2"
    for version, name in ((first, "server"), (second, "server2")):
        version.mkdir(parents=True)
        shutil.copy(pki / f"{name}.pem", version / "tls.crt")
        shutil.copy(pki / f"{name}.key", version / "tls.key")
    (mount / "..data").symlink_to(first.name)
    for f in ("tls.crt", "tls.key"):
        (mount / f).symlink_to(f"..data/{f}")
    (tmp_path / "agent").mkdir()
    a = Agent(manifests(upstream, idle_timeout="30s"), tmp=tmp_path / "agent",
              extra_args=["--tls-cert", str(mount / "tls.crt"), "--tls-key", str(mount / "tls.key")])
    try:
        key, ca = a.key("victim"), pki / "ca.pem"
        assert served_serial(a, ca) == 1001
        context = ssl.create_default_context(cafile=str(ca))
        ws = connect(f"wss://127.0.0.1:{a.http_port}/v1/stream", ssl=context, additional_headers=auth(key))
        assert start(ws)["type"] == "ready"
        credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
        channel = grpc.secure_channel(f"127.0.0.1:{a.grpc_port}", credentials)
        stub = pb[1].InferenceStub(channel)
        done = threading.Event()

        def grpc_audio():
            # Streams 100 ms chunks until told to stop, then ends the stream.
            yield from stream_requests(pb, [], end=False)
            while not done.is_set():
                yield pb[0].StreamRequest(audio=b"\0" * 3200)
                time.sleep(0.1)
            yield pb[0].StreamRequest(end=pb[0].StreamEnd())

        responses = stub.StreamTranscribe(grpc_audio(), metadata=(("authorization", f"Bearer {key}"),), timeout=60)
        collected = []
        reader = threading.Thread(target=lambda: collected.extend(responses))
        reader.start()

        # Renewal: swap ..data to the new pair while both streams run.
        tmp_link = mount / "..data_tmp"
        tmp_link.symlink_to(second.name)
        tmp_link.replace(mount / "..data")
        deadline = time.monotonic() + 10  # keep streaming for 10 s across the swap
        while time.monotonic() < deadline:
            ws.send(b"\0" * 3200)
            time.sleep(0.1)
        assert served_serial(a, ca) == 2002, "new connections see the new certificate"
        ws.send(json.dumps({"type": "end"}))
        final = None
        while final is None:
            message = json.loads(ws.recv(timeout=10))
            if message["type"] == "final":
                final = message
        assert final["audio_seconds"] >= 9.0, final
        ws.close()
        done.set()
        reader.join(20)
        assert collected and collected[-1].WhichOneof("msg") == "result", collected[-1:]
        channel.close()
    finally:
        a.stop()


def test_a_corrupt_replacement_keeps_the_old_certificate(upstream, tmp_path, pki):
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(pki / "server.pem", cert)
    shutil.copy(pki / "server.key", key)
    (tmp_path / "agent").mkdir()
    a = Agent(manifests(upstream), tmp=tmp_path / "agent", extra_args=["--tls-cert", str(cert), "--tls-key", str(key)])
    try:
        cert.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")

        def failures():
            metrics = httpx.get(f"{a.admin}/metrics", timeout=5).text
            line = next((l for l in metrics.splitlines() if l.startswith("infergate_tls_reload_failures_total")), "")
            return float(line.split()[-1]) if line else 0.0

        deadline = time.monotonic() + 10
        while failures() < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert failures() >= 1
        assert served_serial(a, pki / "ca.pem") == 1001, "the old pair keeps serving"
        assert "reload failed" in a.logs()
    finally:
        a.stop()


def test_mutual_tls_required(upstream, tmp_path, pki):
    a = tls_agent(upstream, tmp_path, pki, "--tls-client-ca", str(pki / "client-ca.pem"))
    try:
        key = a.key("app")
        url = f"{https(a)}/v1/models"
        headers = {"authorization": f"Bearer {key}"}

        def context(cert: str | None):
            c = ssl.create_default_context(cafile=str(pki / "ca.pem"))
            if cert:
                c.load_cert_chain(str(pki / f"{cert}.pem"), str(pki / f"{cert}.key"))
            return c

        time.sleep(1.1)  # the expired certificate's notAfter is now in the past
        for who in (None, "rogue", "expired"):
            with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
                httpx.get(url, headers=headers, verify=context(who), timeout=5)
        r = httpx.get(url, headers=headers, verify=context("client"), timeout=5)
        assert r.status_code == 200
    finally:
        a.stop()


def test_expiry_is_exported(upstream, tmp_path, pki):
    a = tls_agent(upstream, tmp_path, pki)
    try:
        metrics = httpx.get(f"{a.admin}/metrics", timeout=5).text
        line = next(l for l in metrics.splitlines() if l.startswith("infergate_tls_certificate_expiry_timestamp_seconds"))
        expires = float(line.split()[-1])
        assert time.time() + 86400 < expires < time.time() + 3 * 86400, "the test certificate lives 2 days"
    finally:
        a.stop()


def test_standalone_self_signed_certificate_works_in_one_command(upstream, tmp_path):
    a = Agent(manifests(upstream), tmp=tmp_path, extra_args=["--tls-self-signed"])
    try:
        line = next(l for l in a.logs().splitlines() if l.startswith("TLS: self-signed certificate"))
        path = Path(line.split(" at ")[1].split(" (SHA-256 ")[0])
        fingerprint = line.split("(SHA-256 ")[1].rstrip(")")
        out = subprocess.run([OPENSSL, "x509", "-in", str(path), "-noout", "-fingerprint", "-sha256"],
                             capture_output=True, text=True, check=True).stdout
        assert out.strip().split("=")[1] == fingerprint
        r = httpx.get(f"https://127.0.0.1:{a.http_port}/v1/models", headers={"authorization": f"Bearer {a.key('app')}"},
                      verify=ssl.create_default_context(cafile=str(path)), timeout=5)
        assert r.status_code == 200
    finally:
        a.stop()


def test_a_policy_can_pin_the_client_certificate(upstream, tmp_path, pki, pb):  # noqa: F811
    # Mutual TLS optional at the listener; the policy "app" requires CN=client, "victim" requires CN=someone-else.
    text = manifests(upstream).replace(
        "  allowedOrigins: [https://app.example.com]",
        "  allowedOrigins: [https://app.example.com]\n  requireClientCertificate: {subjects: [client]}")
    text = text.replace("metadata: {name: victim, namespace: default}\nspec:\n",
                        "metadata: {name: victim, namespace: default}\nspec:\n"
                        "  requireClientCertificate: {subjects: [someone-else], sans: [spiffe://x/y]}\n")
    assert text.count("requireClientCertificate") == 2
    a = Agent(text, tmp=tmp_path, extra_args=[
        "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
        "--tls-client-ca", str(pki / "client-ca.pem"), "--tls-client-auth", "optional"])
    try:
        def context(cert: str | None):
            c = ssl.create_default_context(cafile=str(pki / "ca.pem"))
            if cert:
                c.load_cert_chain(str(pki / f"{cert}.pem"), str(pki / f"{cert}.key"))
            return c

        def models(policy, cert):
            return httpx.get(f"{https(a)}/v1/models", headers={"authorization": f"Bearer {a.key(policy)}"},
                             verify=context(cert), timeout=5)

        r = models("app", None)
        assert (r.status_code, r.json()["error"]["code"]) == (403, "client_certificate_required"), r.text
        assert "requires mutual TLS" in r.json()["error"]["message"]
        assert models("app", "client").status_code == 200
        r = models("victim", "client")
        assert (r.status_code, r.json()["error"]["code"]) == (403, "client_certificate_required"), r.text
        assert "CN=someone-else" in r.json()["error"]["message"] and "CN=client" in r.json()["error"]["message"]
        assert models("tiny", None).status_code == 200, "policies without the requirement are unaffected"
        # gRPC carries the connection's certificate too.
        root = (pki / "ca.pem").read_bytes()
        bare = grpc.ssl_channel_credentials(root_certificates=root)
        mutual = grpc.ssl_channel_credentials(root_certificates=root, private_key=(pki / "client.key").read_bytes(),
                                              certificate_chain=(pki / "client.pem").read_bytes())
        md = (("authorization", f"Bearer {a.key('app')}"),)
        with grpc.secure_channel(f"127.0.0.1:{a.grpc_port}", bare) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                pb[1].InferenceStub(channel).ListModels(pb[0].ListModelsRequest(), metadata=md, timeout=10)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with grpc.secure_channel(f"127.0.0.1:{a.grpc_port}", mutual) as channel:
            pb[1].InferenceStub(channel).ListModels(pb[0].ListModelsRequest(), metadata=md, timeout=10)
    finally:
        a.stop()


def test_the_operator_admin_port_serves_tls(standin, start_operator, pki):
    op = start_operator("op-tls", extra_args=("--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")))
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    url = f"https://127.0.0.1:{op.admin_port}"
    deadline = time.monotonic() + 30
    status = None
    while time.monotonic() < deadline:
        try:
            status = httpx.get(f"{url}/healthz", verify=context, timeout=2).status_code
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    assert status == 200
    metrics = httpx.get(f"{url}/metrics", verify=context, timeout=5).text
    assert "infergate_operator_tls_certificate_expiry_timestamp_seconds" in metrics
    out = s_client(op.admin_port, pki / "ca.pem")
    assert "TLSv1.3" in out, out[-600:]


@pytest.mark.parametrize("algorithm", ["rsa:2048", "ed25519"])
def test_rsa_and_ed25519_keys_are_served(upstream, tmp_path, algorithm):
    openssl("req", "-x509", "-newkey", algorithm, "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", cwd=tmp_path)
    (tmp_path / "agent").mkdir()
    a = Agent(manifests(upstream), tmp=tmp_path / "agent",
              extra_args=["--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem")])
    try:
        out = s_client(a.http_port, tmp_path / "cert.pem")
        assert "TLSv1.3" in out and "Verify return code: 0 (ok)" in out, out[-800:]
    finally:
        a.stop()


def test_no_valid_pair_yet_is_not_ready_then_served_when_it_appears(upstream, tmp_path, pki):
    # cert-manager has not issued the certificate yet: the agent starts, says why it is not ready, and serves the
    # pair as soon as it appears.
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    (tmp_path / "agent").mkdir()
    manifest = tmp_path / "agent" / "world.yaml"
    manifest.write_text(manifests(upstream))
    admin, http, grpc_port = free_port(), free_port(), free_port()
    proc = subprocess.Popen([str(AGENT_BIN), "standalone", "-f", str(manifest), "--keys-out", str(tmp_path / "keys.json"),
                             "--http-addr", f"127.0.0.1:{http}", "--grpc-addr", f"127.0.0.1:{grpc_port}",
                             "--admin-addr", f"127.0.0.1:{admin}", "--tls-cert", str(cert), "--tls-key", str(key)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def readyz():
            try:
                r = httpx.get(f"http://127.0.0.1:{admin}/readyz", timeout=1)
                return r.status_code, r.text
            except httpx.HTTPError:
                return None, ""

        deadline = time.monotonic() + 10
        while readyz()[0] is None and time.monotonic() < deadline:
            time.sleep(0.1)
        status, text = readyz()
        assert status == 503 and "no valid TLS certificate pair" in text, (status, text)
        shutil.copy(pki / "server.key", key)
        shutil.copy(pki / "server.pem", cert)
        deadline = time.monotonic() + 10
        while readyz()[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert readyz()[0] == 200
        r = httpx.get(f"https://127.0.0.1:{http}/v1/models", verify=ssl.create_default_context(cafile=str(pki / "ca.pem")),
                      headers={"authorization": "Bearer nope"}, timeout=5)
        assert r.status_code == 401
    finally:
        proc.terminate()
        proc.wait(10)
