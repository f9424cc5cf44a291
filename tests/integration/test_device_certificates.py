"""Device certificates and mutual TLS, all over real TLS on loopback: a control plane serving
https with client certificates optional, real agents keeping certificates of its device CA,
and a real Mosquitto broker that requires them.

Certificates live 9 s here (agents renew after 6 s), so issuance, rotation with the agent
running and expiry all happen within a test."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgefleet.agent.certificates import build_csr
from edgefleet.client import FleetClient
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from edgefleet.security.keys import DeviceKey, decode_private_key_pem
from tests.conftest import ADMIN_TOKEN
from tests.device_requests import RawDevice
from tests.releases import free_port

LIFETIME_S = 9
StartAgent = Callable[[str], AgentProcess]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_server_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA and a certificate for 127.0.0.1 it issued: (ca.pem, cert.pem, key.pem)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("test server CA"))
        .issuer_name(_name("test server CA")).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    certificate = (
        x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    paths[2].chmod(0o600)
    return paths


@pytest.fixture(scope="module")
def server_tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_server_tls(tmp_path_factory.mktemp("server-tls"))


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, server_tls: tuple[Path, Path, Path]
) -> Iterator[ServerProcess]:
    """A control plane serving https, verifying client certificates of its device CA."""
    ca, cert, key = server_tls
    data_dir = tmp_path_factory.mktemp("server") / "data"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSL_CERT_FILE", str(ca))  # httpx (the fixtures' clients) trusts it
        process = ServerProcess(data_dir, ADMIN_TOKEN, env={
            "EDGEFLEET_TLS_CERT": str(cert), "EDGEFLEET_TLS_KEY": str(key),
            "EDGEFLEET_CLIENT_CA": str(data_dir / "device-ca" / "ca.crt"),
            "EDGEFLEET_DEVICE_CERTIFICATE_LIFETIME_S": str(LIFETIME_S)})  # fmt: skip
        process.start()
        yield process
        process.stop()


@pytest.fixture
def admin(server: ServerProcess) -> Iterator[FleetClient]:
    with server.client() as client:
        yield client


@pytest.fixture
def start_agent(
    server: ServerProcess,
    admin: FleetClient,
    server_tls: tuple[Path, Path, Path],
    tmp_path: Path,
) -> Iterator[StartAgent]:
    started: list[AgentProcess] = []
    token = admin.create_enrollment_token(auto_approve=True)["token"]

    def start(name: str) -> AgentProcess:
        agent = AgentProcess(server.url, tmp_path / name, token, name, heartbeat_interval_s=1.0,
                             extra_args=["--ca-file", str(server_tls[0]),
                                         "--device-certificate"])  # fmt: skip
        agent.start()
        started.append(agent)
        wait_for(lambda: (agent.data_dir / "device.crt").exists(), timeout_s=30,
                 what=f"{name}'s certificate")  # fmt: skip
        return agent

    yield start
    for agent in started:
        agent.stop()


def device_id_of(agent: AgentProcess) -> str:
    device_id = agent.device_id
    assert device_id is not None
    return device_id


def read_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mtls_client(server_tls: tuple[Path, Path, Path], agent: AgentProcess | None) -> httpx.Client:
    """A client of the https control plane presenting `agent`'s certificate (None: none),
    sending no request signature."""
    context = ssl.create_default_context(cafile=str(server_tls[0]))
    if agent is not None:
        context.load_cert_chain(agent.data_dir / "device.crt", agent.data_dir / "device.key")
    return httpx.Client(verify=context, timeout=10)


def test_agent_gets_a_short_lived_certificate_for_its_own_key(
    server: ServerProcess, start_agent: StartAgent, server_tls: tuple[Path, Path, Path]
) -> None:
    agent = start_agent("cert-a")
    device_id = agent.device_id
    certificate = read_certificate(agent.data_dir / "device.crt")
    ca_pem = httpx.get(f"{server.url}/v1/device-ca/certificate").text
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    assert (agent.data_dir / "device-ca.crt").read_text() == ca_pem
    certificate.verify_directly_issued_by(ca)
    assert certificate.subject.rfc4514_string() == f"CN={device_id}"
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [device_id]
    # The device's own key: the private key never left the device.
    seed = decode_private_key_pem((agent.data_dir / "device.key").read_bytes())
    own = serialization.load_der_public_key(
        serialization.load_pem_private_key((agent.data_dir / "device.key").read_bytes(), None)
        .public_key().public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
    assert certificate.public_key() == own
    assert DeviceKey(seed).public_key_b64  # the agent's key file is the one it signs with
    life = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert life <= timedelta(seconds=LIFETIME_S + 301)  # backdated 5 minutes for clock lag
    # The CA key is the server's alone.
    assert (server.data_dir / "device-ca" / "ca.key").stat().st_mode & 0o077 == 0


def test_a_device_certificate_authenticates_requests_over_mutual_tls(
    server: ServerProcess, start_agent: StartAgent, server_tls: tuple[Path, Path, Path]
) -> None:
    first, second = start_agent("mtls-a"), start_agent("mtls-b")
    target = f"{server.url}/v1/devices/{first.device_id}/desired"
    with mtls_client(server_tls, first) as client:
        assert client.get(target).status_code == 200  # no signature headers at all
    with mtls_client(server_tls, second) as client:
        answer = client.get(target)
        assert answer.status_code == 403
        assert answer.json()["error"]["code"] == "wrong_device"
    with mtls_client(server_tls, None) as client:
        answer = client.get(target)
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "unsigned_request"


def test_the_ca_refuses_a_csr_for_another_key(server: ServerProcess, admin: FleetClient) -> None:
    device = RawDevice(server.url)
    assert device.enroll(admin.create_enrollment_token(auto_approve=True)["token"]).is_success
    target = f"/v1/devices/{device.id}/certificate"
    answer = device.call("POST", target, {"csr": build_csr(DeviceKey.generate(), device.id)})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "csr_key_mismatch"
    answer = device.call("POST", target, {"csr": build_csr(device.key, device.id)})
    assert answer.status_code == 200, answer.text


def test_the_agent_renews_its_certificate_while_running(
    server: ServerProcess,
    admin: FleetClient,
    start_agent: StartAgent,
    server_tls: tuple[Path, Path, Path],
) -> None:
    agent = start_agent("rotating")
    first = read_certificate(agent.data_dir / "device.crt")
    wait_for(
        lambda: (
            read_certificate(agent.data_dir / "device.crt").serial_number != first.serial_number
        ),
        timeout_s=LIFETIME_S + 10,
        what="a renewed certificate",
    )
    # Past the first certificate's end the agent still reports (over connections that
    # present the new one: the old one is refused once expired).
    end = first.not_valid_after_utc
    wait_for(lambda: datetime.now(UTC) > end + timedelta(seconds=2), timeout_s=LIFETIME_S + 5,
             what="the first certificate to expire")  # fmt: skip
    seen = datetime.fromisoformat(admin.get_device(device_id_of(agent))["last_seen"])
    wait_for(
        lambda: datetime.fromisoformat(admin.get_device(device_id_of(agent))["last_seen"]) > seen,
        timeout_s=10,
        what="a heartbeat after the first certificate expired",
    )
    assert "certificate_expired" not in agent.log()
    with mtls_client(server_tls, agent) as client:  # the renewed certificate on disk works
        assert client.get(f"{server.url}/v1/devices/{agent.device_id}/desired").is_success


def test_an_agent_stopped_past_its_certificates_end_gets_a_new_one(
    server: ServerProcess,
    admin: FleetClient,
    start_agent: StartAgent,
    server_tls: tuple[Path, Path, Path],
) -> None:
    agent = start_agent("sleeper")
    first = read_certificate(agent.data_dir / "device.crt")
    agent.stop()
    end = first.not_valid_after_utc
    wait_for(lambda: datetime.now(UTC) > end + timedelta(seconds=1), timeout_s=LIFETIME_S + 5,
             what="the certificate to expire while the agent is stopped")  # fmt: skip
    agent.start()  # it must not present the expired certificate: the handshake would fail
    wait_for(
        lambda: (
            read_certificate(agent.data_dir / "device.crt").serial_number != first.serial_number
        ),
        timeout_s=20,
        what="a new certificate after the restart",
    )
    with mtls_client(server_tls, agent) as client:
        assert client.get(f"{server.url}/v1/devices/{device_id_of(agent)}/desired").is_success


def test_a_revoked_device_is_refused_at_once(
    server: ServerProcess,
    admin: FleetClient,
    start_agent: StartAgent,
    server_tls: tuple[Path, Path, Path],
) -> None:
    agent = start_agent("revoked")
    serial = read_certificate(agent.data_dir / "device.crt").serial_number
    admin.change_enrollment(device_id_of(agent), "revoke")
    with mtls_client(server_tls, agent) as client:  # its certificate has not expired yet
        answer = client.get(f"{server.url}/v1/devices/{agent.device_id}/desired")
        assert answer.status_code == 403
        assert answer.json()["error"]["code"] == "device_revoked"
        answer = client.post(f"{server.url}/v1/devices/{agent.device_id}/certificate",
                             json={"csr": "x"})  # fmt: skip
        assert answer.status_code == 403
    crl = x509.load_pem_x509_crl(httpx.get(f"{server.url}/v1/device-ca/crl").content)
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None


# -- Mosquitto: the broker takes device certificates ------------------------------------------


def start_broker(directory: Path, server: ServerProcess, server_tls: tuple[Path, Path, Path],
                 acl: str) -> tuple[subprocess.Popen[bytes], int]:  # fmt: skip
    """Mosquitto on a free port: TLS with the test server certificate, client certificates
    of the device CA required (the CN is the user name), the control plane's CRL."""
    directory.mkdir(exist_ok=True)
    (directory / "ca.crt").write_bytes(httpx.get(f"{server.url}/v1/device-ca/certificate").content)
    (directory / "crl.pem").write_bytes(httpx.get(f"{server.url}/v1/device-ca/crl").content)
    (directory / "acl").write_text(acl)
    port = free_port()
    config = directory / "mosquitto.conf"
    config.write_text("\n".join([
        "user root", "persistence false", "log_dest stderr", "log_type all",
        f"listener {port} 127.0.0.1",
        f"cafile {directory / 'ca.crt'}", f"certfile {server_tls[1]}", f"keyfile {server_tls[2]}",
        "require_certificate true", "use_identity_as_username true",
        f"crlfile {directory / 'crl.pem'}", f"acl_file {directory / 'acl'}", "",
    ]))  # fmt: skip
    with (directory / "mosquitto.log").open("wb") as log:
        broker = subprocess.Popen(["mosquitto", "-c", str(config)], stdout=log, stderr=log)
    wait_for(lambda: b"running" in (directory / "mosquitto.log").read_bytes(), timeout_s=10,
             what="mosquitto to start")  # fmt: skip
    return broker, port


def mqtt_args(port: int, server_tls: tuple[Path, Path, Path], agent: AgentProcess | None,
              certificate: Path | None = None) -> list[str]:  # fmt: skip
    args = ["-h", "127.0.0.1", "-p", str(port), "--cafile", str(server_tls[0])]
    if agent is not None:
        args += ["--cert", str(certificate or agent.data_dir / "device.crt"),
                 "--key", str(agent.data_dir / "device.key")]  # fmt: skip
    return args


def broker_refusal(port: int, server_tls: tuple[Path, Path, Path], certificate: Path,
                   key: Path) -> str:  # fmt: skip
    """The TLS alert the broker answers a client presenting `certificate` with ('' if it
    takes it)."""
    context = ssl.create_default_context(cafile=str(server_tls[0]))
    context.load_cert_chain(certificate, key)
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.recv(16)  # under TLS 1.3 the server's alert follows the handshake
    except ssl.SSLError as e:
        return e.reason or str(e)
    return ""


def publish(
    port: int,
    server_tls: tuple[Path, Path, Path],
    agent: AgentProcess | None,
    topic: str,
    certificate: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["mosquitto_pub", *mqtt_args(port, server_tls, agent, certificate), "-t", topic,
         "-m", "hello", "-q", "1"],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto")
def test_the_broker_takes_device_certificates_and_refuses_others(
    server: ServerProcess,
    admin: FleetClient,
    start_agent: StartAgent,
    server_tls: tuple[Path, Path, Path],
    tmp_path: Path,
) -> None:
    sender, reader, revoked = start_agent("mqtt-a"), start_agent("mqtt-b"), start_agent("mqtt-c")
    expired_copy = tmp_path / "expired.crt"
    shutil.copy(sender.data_dir / "device.crt", expired_copy)
    admin.change_enrollment(device_id_of(revoked), "revoke")
    acl = (f"user {reader.device_id}\ntopic read devices/#\n\n"
           "pattern write devices/%u/#\n")  # fmt: skip
    broker, port = start_broker(tmp_path / "broker", server, server_tls, acl)
    try:
        subscriber = subprocess.Popen(
            ["mosquitto_sub", *mqtt_args(port, server_tls, reader), "-t", "devices/#", "-v",
             "-C", "1", "-W", "20"], stdout=subprocess.PIPE, text=True)  # fmt: skip
        wait_for(lambda: b"Subscribe" in (tmp_path / "broker" / "mosquitto.log").read_bytes()
                 or b"SUBSCRIBE" in (tmp_path / "broker" / "mosquitto.log").read_bytes(),
                 timeout_s=10, what="the subscription")  # fmt: skip
        topic = f"devices/{sender.device_id}/telemetry"
        # Another device's topic first: the ACL (%u: the certificate's CN) drops it, so
        # the reader's first message is the one to the sender's own topic.
        assert publish(port, server_tls, sender, f"devices/{reader.device_id}/x").returncode == 0
        assert publish(port, server_tls, sender, topic).returncode == 0
        out, _ = subscriber.communicate(timeout=25)
        assert out.strip() == f"{topic} hello"
        # No certificate, a revoked device's (the CRL), an expired one: refused.
        assert publish(port, server_tls, None, topic).returncode != 0
        revoked_topic = f"devices/{revoked.device_id}/telemetry"
        assert publish(port, server_tls, revoked, revoked_topic).returncode != 0
        key = revoked.data_dir / "device.key"
        assert "CERTIFICATE_REVOKED" in broker_refusal(
            port, server_tls, revoked.data_dir / "device.crt", key
        )
        wait_for(
            lambda: datetime.now(UTC) > read_certificate(expired_copy).not_valid_after_utc,
            timeout_s=LIFETIME_S + 5,
            what="the copied certificate to expire",
        )
        assert publish(port, server_tls, sender, topic, certificate=expired_copy).returncode != 0
        assert "CERTIFICATE_EXPIRED" in broker_refusal(
            port, server_tls, expired_copy, sender.data_dir / "device.key"
        )
        assert publish(port, server_tls, sender, topic).returncode == 0  # its renewed one
    finally:
        broker.terminate()
        broker.wait(timeout=10)
