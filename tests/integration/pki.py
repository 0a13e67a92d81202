"""A throwaway certificate authority, made fresh for each test session.

Certificates are generated at test time rather than committed so that none
can expire in the repository, and so that each failure mode a DoT client
must reject (wrong name, expired, not yet valid, unknown issuer) is one
keyword away. Keys are EC P-256: fast to generate and accepted everywhere.
"""

import base64
import datetime
import hashlib
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Fixed past window for expired certificates: entirely before any plausible
# test run, so "expired" never depends on the clock being roughly right.
_EXPIRED_FROM = datetime.datetime(2020, 1, 1)
_EXPIRED_UNTIL = datetime.datetime(2021, 1, 1)


def _write(path, data, mode=0o644):
    # Private keys get 0600 from the moment they exist: tools that load them
    # may complain about group/world-readable keys.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)  # the file may have existed with other bits


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


class PKI:
    """A CA whose certificate is written to `<directory>/ca.pem`.

    Two instances are two unrelated CAs: a client trusting one must reject
    leaves of the other ("unknown CA").
    """

    def __init__(self, directory: str, name: str = "dotproxy test CA"):
        self.directory = str(directory)
        os.makedirs(self.directory, exist_ok=True)
        now = datetime.datetime.utcnow()
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ski = x509.SubjectKeyIdentifier.from_public_key(self._key.public_key())
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            # Starts before the fixed "expired" window so that an expired leaf
            # fails for its own dates, not because its issuer was not yet valid.
            .not_valid_before(datetime.datetime(2019, 1, 1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = os.path.join(self.directory, "ca.pem")
        _write(self.ca_file, _cert_pem(self._cert))

    def leaf(self, basename: str, *, dns_names=(), ip_addresses=(), expired=False,
             not_yet_valid=False):
        """Issue a TLS server certificate; return (cert_path, key_path).

        The files are `<basename>.pem` and `<basename>.key` in the CA's
        directory; the certificate file holds the leaf only (our CA is the
        trust anchor itself, so no intermediate is needed).
        """
        if expired and not_yet_valid:
            raise ValueError("a certificate cannot be both expired and not yet valid")
        now = datetime.datetime.utcnow()
        if expired:
            not_before, not_after = _EXPIRED_FROM, _EXPIRED_UNTIL
        elif not_yet_valid:
            not_before = now + datetime.timedelta(days=365)
            not_after = now + datetime.timedelta(days=730)
        else:
            # An hour of slack for clock skew between "now" here and the
            # verifier's idea of now.
            not_before = now - datetime.timedelta(hours=1)
            not_after = now + datetime.timedelta(days=365)

        key = ec.generate_private_key(ec.SECP256R1())
        sans = [x509.DNSName(n) for n in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        cn = (list(dns_names) + [str(a) for a in ip_addresses] + [basename])[0]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self._key.public_key()), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())

        cert_path = os.path.join(self.directory, basename + ".pem")
        key_path = os.path.join(self.directory, basename + ".key")
        _write(cert_path, _cert_pem(cert))
        _write(key_path, _key_pem(key), 0o600)
        return cert_path, key_path

    @staticmethod
    def spki_pin(cert_path) -> str:
        """base64(SHA-256(DER SubjectPublicKeyInfo)), the RFC 7469 / RFC 7858 pin format."""
        with open(cert_path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")
