"""Local data (--local-data, --hosts), built-in zones switched off, and forward
zones for names the built-in zones would otherwise answer (home.arpa, the
private reverse zones).  The default upstream is a fake that records every
question: local answers must never reach it.
"""

import signal

import dns.flags
import dns.rcode
import dns.rdatatype
import dns.reversename



def names_seen(up):
    return {str(q.question[0].name).lower() for q in up.queries if q is not None}


def rdata_texts(reply, rdtype):
    return sorted(r.to_text() for rrset in reply.answer if rrset.rdtype == rdtype
                  for r in rrset)


def test_local_data_answers_with_aa_and_never_goes_upstream(fake_upstream, dotproxy):
    up = fake_upstream()
    p = dotproxy([up], extra_args=[
        "--local-data", "nas.home.arpa A 192.168.1.10",
        "--local-data", "nas.home.arpa. 600 AAAA fd00::10",
        "--local-data", 'nas.home.arpa TXT "hello world" "second"',
        "--local-data", "www.corp.example CNAME nas.home.arpa",
        "--local-data", "mail.corp.example MX 10 nas.home.arpa.",
        "--local-data", "_sip._tcp.corp.example SRV 0 5 5060 nas.home.arpa",
        "--local-data", "10.1.168.192.in-addr.arpa PTR nas.home.arpa"])
    a = p.udp("NAS.home.arpa.")
    assert a.rcode() == dns.rcode.NOERROR and a.flags & dns.flags.AA
    assert rdata_texts(a, dns.rdatatype.A) == ["192.168.1.10"]
    assert a.answer[0].ttl == 3600  # the default TTL
    aaaa = p.udp("nas.home.arpa.", "AAAA")
    assert rdata_texts(aaaa, dns.rdatatype.AAAA) == ["fd00::10"] and aaaa.answer[0].ttl == 600
    txt = p.udp("nas.home.arpa.", "TXT")
    assert rdata_texts(txt, dns.rdatatype.TXT) == ['"hello world" "second"']
    # A CNAME is followed within local data (RFC 1034 §4.3.2).
    cname = p.udp("www.corp.example.")
    assert rdata_texts(cname, dns.rdatatype.CNAME) == ["nas.home.arpa."]
    assert rdata_texts(cname, dns.rdatatype.A) == ["192.168.1.10"]
    assert rdata_texts(p.udp("mail.corp.example.", "MX"), dns.rdatatype.MX) == \
        ["10 nas.home.arpa."]
    assert rdata_texts(p.udp("_sip._tcp.corp.example.", "SRV"), dns.rdatatype.SRV) == \
        ["0 5 5060 nas.home.arpa."]
    ptr = p.udp("10.1.168.192.in-addr.arpa.", "PTR")
    assert rdata_texts(ptr, dns.rdatatype.PTR) == ["nas.home.arpa."]
    # Another type of a listed name: NODATA, here, not forwarded.
    nodata = p.udp("nas.home.arpa.", "MX")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert nodata.flags & dns.flags.AA
    # Names not listed go upstream as usual.
    assert p.udp("www.example.").rcode() == dns.rcode.NOERROR
    assert names_seen(up) == {"www.example."}
    assert p.stats()["local_answers"] >= 8


def test_hosts_file(fake_upstream, dotproxy, workdir):
    up = fake_upstream()
    hosts = workdir / "hosts"
    hosts.write_text("# a hosts file\n"
                     "192.168.1.20\tprinter.lan printer   # aliases, tabs\n"
                     "192.168.1.20 other.lan\n"
                     "fd00::20 printer.lan\n"
                     "192.168.1.30 v4only.lan\n"
                     "127.0.0.30 loopback30.lan\n")
    p = dotproxy([up], extra_args=["--hosts", hosts])
    assert rdata_texts(p.udp("printer.lan."), dns.rdatatype.A) == ["192.168.1.20"]
    assert rdata_texts(p.udp("printer."), dns.rdatatype.A) == ["192.168.1.20"]
    assert rdata_texts(p.udp("other.lan."), dns.rdatatype.A) == ["192.168.1.20"]
    assert rdata_texts(p.udp("printer.lan.", "AAAA"), dns.rdatatype.AAAA) == ["fd00::20"]
    # PTR: the first name of the first line that has the address.
    rev = str(dns.reversename.from_address("192.168.1.20"))
    assert rdata_texts(p.udp(rev, "PTR"), dns.rdatatype.PTR) == ["printer.lan."]
    # An IPv4-only name gets NODATA for AAAA; it is not forwarded.
    v4 = p.udp("v4only.lan.", "AAAA")
    assert v4.rcode() == dns.rcode.NOERROR and not v4.answer
    # Local data wins over a built-in zone: 127.0.0.30 is in the loopback
    # reverse zone, answered NXDOMAIN without the hosts line.
    rev30 = str(dns.reversename.from_address("127.0.0.30"))
    assert rdata_texts(p.udp(rev30, "PTR"), dns.rdatatype.PTR) == ["loopback30.lan."]
    rev31 = str(dns.reversename.from_address("127.0.0.31"))
    assert p.udp(rev31, "PTR").rcode() == dns.rcode.NXDOMAIN
    assert names_seen(up) == set()


def test_hosts_file_is_read_again_on_sighup(fake_upstream, dotproxy, workdir):
    hosts = workdir / "hosts"
    hosts.write_text("192.168.1.40 nas.lan\n")
    p = dotproxy([fake_upstream()], extra_args=["--hosts", hosts, "--cache-size", "0"],
                 verbose=1)
    assert rdata_texts(p.udp("nas.lan."), dns.rdatatype.A) == ["192.168.1.40"]
    hosts.write_text("192.168.1.41 nas.lan\n")
    mark = p.log_offset()
    p.send_signal(signal.SIGHUP)
    assert p.wait_log(r"configuration reloaded", since=mark)
    assert rdata_texts(p.udp("nas.lan."), dns.rdatatype.A) == ["192.168.1.41"]
    # A broken file keeps the old data, and says why.
    hosts.write_text("192.168.1.300 nas.lan\n")
    mark = p.log_offset()
    p.send_signal(signal.SIGHUP)
    m = p.wait_log(r"configuration unchanged: (.*)", since=mark)
    assert m and "hosts" in m.group(1) and "192.168.1.300" in m.group(1), p.log_since(mark)
    assert rdata_texts(p.udp("nas.lan."), dns.rdatatype.A) == ["192.168.1.41"]


def test_large_local_answer_is_truncated_over_udp_and_whole_over_tcp(fake_upstream, dotproxy):
    args = []
    for i in range(60):
        args += ["--local-data", f"many.lan TXT \"record number {i:03d} {'x' * 20}\""]
    p = dotproxy([fake_upstream()], extra_args=args)
    udp = p.udp("many.lan.", "TXT", use_edns=0, payload=1232)
    assert udp.flags & dns.flags.TC and len(udp.to_wire()) <= 1232
    tcp = p.tcp("many.lan.", "TXT")
    assert len(rdata_texts(tcp, dns.rdatatype.TXT)) == 60


def test_forward_zone_takes_a_built_in_zone_and_a_reverse_zone(fake_upstream, fake_plain,
                                                                dotproxy):
    default = fake_upstream()
    router = fake_plain()
    spec = f"udp://{router.host}:{router.port}"
    p = dotproxy([default], extra_args=[
        "--forward-zone", f"home.arpa={spec}",
        "--forward-zone", f"1.168.192.in-addr.arpa={spec}"])
    # home.arpa is a built-in zone (NXDOMAIN here); forwarded, the router answers.
    assert rdata_texts(p.udp("printer.home.arpa."), dns.rdatatype.A) == ["192.0.2.1"]
    # The forward zone below the built-in 168.192.in-addr.arpa wins for its
    # own subtree; the rest of the built-in zone stays local.
    in_zone = str(dns.reversename.from_address("192.168.1.5"))
    p.udp(in_zone, "PTR")
    outside = str(dns.reversename.from_address("192.168.2.5"))
    assert p.udp(outside, "PTR").rcode() == dns.rcode.NXDOMAIN
    assert router.names() == {"printer.home.arpa.", in_zone.lower()}
    assert names_seen(default) == set()


def test_built_in_zone_switched_off_goes_upstream(fake_upstream, dotproxy):
    up = fake_upstream()
    p = dotproxy([up], extra_args=["--no-builtin-zone", "home.arpa"])
    assert p.udp("printer.home.arpa.").rcode() == dns.rcode.NOERROR
    assert names_seen(up) == {"printer.home.arpa."}
    # The other built-in zones still answer here.
    assert p.udp("x.local.").rcode() == dns.rcode.NXDOMAIN
    assert names_seen(up) == {"printer.home.arpa."}


def test_bad_local_data_and_hosts_are_configuration_errors(workdir):
    from dotproxy_proc import run_cli
    bad_hosts = workdir / "hosts"
    bad_hosts.write_text("192.168.1.1 ok.lan\n1.2.3 broken.lan\n")
    for args, needle in [
            (["--local-data", "nas.lan A 1.2.3"], "1.2.3"),
            (["--local-data", "nas.lan BOGUS x"], "BOGUS"),
            (["--local-data", "nas.lan TXT unquoted"], "TXT"),
            (["--hosts", str(bad_hosts)], f"{bad_hosts}:2"),
            (["--hosts", str(workdir / "missing")], "No such file"),
            (["--no-builtin-zone", "example.com"], "not a built-in zone")]:
        r = run_cli(args + ["--check-config"])
        assert r.returncode == 2, (args, r.stderr)
        assert needle in r.stderr, (args, r.stderr)
