"""What the DoT and DoH listener tests share: the LAN name and its
certificate, a local name to ask, and dotproxy started with one listener."""

from netutil import free_port

LAN_NAME = "dns.lan.test"
LOCAL = ["--local-data", f"www.{LAN_NAME} A 192.0.2.7"]


def a_records(msg):
    return sorted(rr.to_text() for rrset in msg.answer for rr in rrset)


def lan_leaf(pki):
    """A certificate for LAN_NAME, 127.0.0.1 and ::1: (cert file, key file)."""
    return pki.leaf("lan", dns_names=[LAN_NAME], ip_addresses=["127.0.0.1", "::1"])


def listener_starter(dotproxy, fake_upstream, lan_cert, listen_option):
    """A start(extra=(), upstream=None, cert=None, **kw) that runs dotproxy
    with one listener (`--listen-tls` or `--listen-https`) on a free port,
    LOCAL data and a fake upstream; it returns (proc, port, upstream)."""
    def start(extra=(), upstream=None, cert=None, **kw):
        up = upstream or fake_upstream()
        port = free_port()
        cert_file, key_file = cert or lan_cert
        p = dotproxy([up], extra_args=[listen_option, f"127.0.0.1:{port}",
                                       "--cert-file", cert_file, "--key-file", key_file,
                                       *LOCAL, *extra], **kw)
        return p, port, up
    return start
