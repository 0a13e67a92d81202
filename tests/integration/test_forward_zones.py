"""--forward-zone: names in a zone go to the zone's own upstreams.

These tests use DoT upstreams for every zone (the plain-DNS transport has
its own tests, test_plain_upstream.py): which server sees which name is
what is checked, through each fake upstream's record of the queries it read.
"""

import signal

import dns.rcode

from dotproxy_proc import run_cli, upstream_arg


def names_seen(up):
    return {str(q.question[0].name).lower() for q in up.queries if q is not None}


def test_zone_names_go_to_the_zone_and_nothing_else_does(fake_upstream, dotproxy):
    default, corp = fake_upstream(), fake_upstream()
    p = dotproxy([default], extra_args=[
        "--cache-size", "0",
        "--forward-zone", f"corp.example={upstream_arg(corp)}"])
    inside = ["corp.example.", "www.corp.example.", "A.B.Corp.Example."]
    outside = ["www.example.", "xcorp.example.", "corp.example.net."]
    for name in inside + outside:
        assert p.udp(name).rcode() == dns.rcode.NOERROR, name
    assert names_seen(corp) == {n.lower() for n in inside}
    assert names_seen(default) == set(outside)


def test_the_longest_zone_wins(fake_upstream, dotproxy):
    default, corp, lab = fake_upstream(), fake_upstream(), fake_upstream()
    p = dotproxy([default], extra_args=[
        "--cache-size", "0",
        # the shorter zone first: order must not matter
        "--forward-zone", f"corp.example={upstream_arg(corp)}",
        "--forward-zone", f"lab.corp.example.={upstream_arg(lab)}"])
    for name in ("a.lab.corp.example.", "lab.corp.example.", "b.corp.example.", "c.example."):
        assert p.udp(name).rcode() == dns.rcode.NOERROR, name
    assert names_seen(lab) == {"a.lab.corp.example.", "lab.corp.example."}
    assert names_seen(corp) == {"b.corp.example."}
    assert names_seen(default) == {"c.example."}


def test_a_zone_has_its_own_health(fake_upstream, dotproxy):
    # The zone's only upstream stalls: its queries fail by the deadline,
    # while the default upstream keeps answering everything else at once.
    default, corp = fake_upstream(), fake_upstream(stall=True)
    p = dotproxy([default], extra_args=[
        "--cache-size", "0", "--timeout", "800",
        "--forward-zone", f"corp.example={upstream_arg(corp)}"])
    assert p.udp("x.corp.example.", timeout=5).rcode() == dns.rcode.SERVFAIL
    assert p.udp("www.example.").rcode() == dns.rcode.NOERROR
    assert "x.corp.example." not in names_seen(default)


def test_dot_zone_sets_the_default_upstreams(fake_upstream, dotproxy):
    first, second = fake_upstream(), fake_upstream()
    p = dotproxy([first], extra_args=[
        "--cache-size", "0", "--forward-zone", f".={upstream_arg(second)}"])
    assert p.udp("www.example.").rcode() == dns.rcode.NOERROR
    assert names_seen(second) == {"www.example."}
    assert names_seen(first) == set()


def test_zones_are_reloaded(fake_upstream, dotproxy, workdir):
    default, corp, other = fake_upstream(), fake_upstream(), fake_upstream()
    conf = workdir / "dotproxy.conf"
    conf.write_text(f"upstream {upstream_arg(default)}\ncache-size 0\n"
                    f"forward-zone corp.example={upstream_arg(corp)}\n")
    p = dotproxy([], extra_args=["--config", conf], verbose=1)
    assert p.udp("a.corp.example.").rcode() == dns.rcode.NOERROR
    conf.write_text(f"upstream {upstream_arg(default)}\ncache-size 0\n"
                    f"forward-zone corp.example={upstream_arg(other)}\n")
    mark = p.log_offset()
    p.send_signal(signal.SIGHUP)
    assert p.wait_log(r"configuration reloaded", since=mark)
    assert p.udp("b.corp.example.").rcode() == dns.rcode.NOERROR
    assert names_seen(corp) == {"a.corp.example."}
    assert names_seen(other) == {"b.corp.example."}
    assert names_seen(default) == set()


def test_plain_dns_only_inside_a_zone():
    r = run_cli(["--upstream", "udp://127.0.0.1:53", "--check-config"])
    assert r.returncode == 2
    assert "cleartext" in r.stderr and "--forward-zone" in r.stderr
    r = run_cli(["--forward-zone", ".=udp://127.0.0.1", "--check-config"])
    assert r.returncode == 2 and "cleartext" in r.stderr
    r = run_cli(["--forward-zone", "home.arpa=udp://127.0.0.1:5353",
                            "--check-config"])
    assert r.returncode == 0, r.stderr


def test_bad_forward_zones_are_configuration_errors():
    for bad, why in [("home.arpa", "expected ZONE=SPEC"),
                     ("home..arpa=udp://127.0.0.1", "expected ZONE=SPEC"),
                     ("home.arpa=", "no upstream"),
                     ("home.arpa=udp://printer", "udp://IP"),
                     ("home.arpa=127.0.0.1@99999", "port")]:
        r = run_cli(["--forward-zone", bad, "--check-config"])
        assert r.returncode == 2, bad
        assert why in r.stderr, (bad, r.stderr)
    r = run_cli(["--forward-zone", "a.example=udp://127.0.0.1",
                            "--forward-zone", "A.example.=udp://127.0.0.2", "--check-config"])
    assert r.returncode == 2 and "given twice" in r.stderr
