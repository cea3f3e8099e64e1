"""The status endpoint's TLS material. The CA lives in a Secret, so a restarted operator
keeps it and trainers that hold the CA in their plan keep trusting the endpoint; the serving
certificate is made anew at each start from that CA. Pure: bytes in, bytes out."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT_KEY = "ca.crt"
CA_KEY_KEY = "ca.key"
#: CA lifetime: ten years, as kubeadm's cluster CA.
CA_DAYS = 3650
#: Serving certificate lifetime; it is re-made at every start.
SERVING_DAYS = 365


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM private key (PKCS#8, unencrypted)."""

    cert_pem: bytes
    key_pem: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def new_ca(now: dt.datetime, common_name: str = "kubevision-status-ca") -> KeyPair:
    """A self-signed ECDSA P-256 CA valid from ``now`` (minus a minute of clock skew)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def serving_certificate(ca: KeyPair, hosts: list[str], now: dt.datetime) -> KeyPair:
    """A server certificate signed by ``ca`` for DNS names and IP addresses in ``hosts``.

    Raises:
        ValueError: ``hosts`` is empty, or the CA's key is not an EC key.
    """
    if not hosts:
        raise ValueError("a serving certificate needs at least one host")
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an EC private key")
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=SERVING_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def ca_from_secret_data(data: dict[str, bytes]) -> KeyPair | None:
    """The CA kept in a Secret's (decoded) data, or None if it holds none."""
    if CA_CERT_KEY in data and CA_KEY_KEY in data:
        return KeyPair(data[CA_CERT_KEY], data[CA_KEY_KEY])
    return None


def secret_data(ca: KeyPair) -> dict[str, bytes]:
    """The Secret data that keeps ``ca``."""
    return {CA_CERT_KEY: ca.cert_pem, CA_KEY_KEY: ca.key_pem}
