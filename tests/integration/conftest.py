"""pytest fixtures for dotproxy's integration tests.

Everything runs on loopback with certificates made for this session; no
test may reach a public resolver. Fixtures that start something also stop
it, and the dotproxy fixture turns a crash (signal, sanitizer report) into
a test failure even when the test's own assertions passed.

Quick reference:
    certs           session: Certs (CA file and (cert, key) pairs for each case)
    pki             session: the PKI behind certs.good, for issuing more leaves
    workdir         this test's temp dir (a pathlib.Path)
    unbound         a running UnboundDoT with certs.good and the default records
    unbound_factory unbound_factory(records=..., extra_conf=..., tls=(cert, key))
    fake_upstream   fake_upstream(tls=(cert, key), **behaviour) -> started FakeUpstream
    fake_plain      fake_plain(**behaviour) -> started FakePlain (plain DNS, UDP and TCP)
    fake_doh        fake_doh(tls=(cert, key) | cert_name=NAME, alpn=..., **behaviour)
                    -> started FakeDoH
    doh_client      doh_client(server | port, **kw) -> DoHClient trusting certs.ca_file
    dotproxy        dotproxy(upstreams=[...], extra_args=[...], listen=None, ...) -> DotProxy
Query helpers (also importable from netutil): udp_query, tcp_query, dot_query.
"""

import dataclasses
import os
import signal
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # whatever pytest's import mode, our modules import by name
    sys.path.insert(0, HERE)

from dotproxy_proc import AUTH_NAME, DotProxy, binary_path, check_binary, upstream_arg  # noqa: E402
from fake_plain import FakePlain  # noqa: E402
from fake_upstream import FakeUpstream  # noqa: E402
from netutil import dot_query, free_port, tcp_query, udp_query  # noqa: E402
from pki import PKI  # noqa: E402
from unbound_dot import UnboundDoT  # noqa: E402

# The query helpers live in netutil; they are importable from here too.
QUERY_HELPERS = (udp_query, tcp_query, dot_query)

# A hung test must fail, not stall CI: every test gets a wall-clock limit,
# raised with @pytest.mark.time_limit(seconds) where a test needs longer.
DEFAULT_TIME_LIMIT = float(os.environ.get("DOTPROXY_TEST_TIME_LIMIT", "60"))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "time_limit(seconds): fail the test if it runs longer (default "
        f"{DEFAULT_TIME_LIMIT:g} s, env DOTPROXY_TEST_TIME_LIMIT)")


class TimeLimitExceeded(Exception):
    pass


@pytest.fixture(autouse=True)
def _time_limit(request):
    # SIGALRM interrupts the main thread even inside a blocking socket call;
    # the fixtures' own threads never block the test thread, so this is enough.
    marker = request.node.get_closest_marker("time_limit")
    limit = float(marker.args[0]) if marker else DEFAULT_TIME_LIMIT

    def expired(signum, frame):
        raise TimeLimitExceeded(f"test exceeded its time limit of {limit:g} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# -- attaching daemon logs to failure reports ------------------------------------

def _add_log_source(request, title, get_text):
    request.node.__dict__.setdefault("_log_sources", []).append((title, get_text))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    # On a failed test, show what the daemons said: usually the quickest
    # way to see why. Fixture set-up/teardown failures carry their own logs.
    if rep.when == "call" and rep.failed:
        for title, get_text in item.__dict__.get("_log_sources", []):
            try:
                text = get_text()
            except Exception as e:  # never hide the real failure behind this
                text = f"(could not read: {e!r})"
            lines = text.splitlines()
            rep.sections.append((title, "\n".join(lines[-200:])))


# -- certificates --------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Certs:
    """Every certificate case a test needs; each pair is (cert_path, key_path)."""
    ca_file: str           # trust anchor for everything below except unknown_ca
    good: tuple            # dns.example.test, 127.0.0.1, ::1
    wrong_name: tuple      # other.example.test (same CA)
    ip_only: tuple         # no DNS name, IP SANs 127.0.0.1 and ::1
    expired: tuple         # dns.example.test, valid 2020-01-01 .. 2021-01-01
    not_yet_valid: tuple   # dns.example.test, valid from a year from now
    unknown_ca: tuple      # dns.example.test + 127.0.0.1, from a CA nobody trusts
    unknown_ca_file: str   # that other CA's certificate


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return PKI(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="session")
def certs(pki, tmp_path_factory):
    other = PKI(str(tmp_path_factory.mktemp("pki-unknown")), name="unknown test CA")
    name = [AUTH_NAME]
    ips = ["127.0.0.1", "::1"]
    return Certs(
        ca_file=pki.ca_file,
        good=pki.leaf("good", dns_names=name, ip_addresses=ips),
        wrong_name=pki.leaf("wrong-name", dns_names=["other.example.test"]),
        ip_only=pki.leaf("ip-only", ip_addresses=ips),
        expired=pki.leaf("expired", dns_names=name, ip_addresses=ips, expired=True),
        not_yet_valid=pki.leaf("not-yet-valid", dns_names=name, ip_addresses=ips,
                               not_yet_valid=True),
        unknown_ca=other.leaf("unknown-ca", dns_names=name, ip_addresses=ips),
        unknown_ca_file=other.ca_file,
    )


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


# -- upstreams ------------------------------------------------------------------------

@pytest.fixture
def unbound_factory(request, workdir, certs):
    started = []

    def start(*, tls=None, records=(), extra_conf="", port=0, **kw):
        cert, key = tls or certs.good
        u = UnboundDoT(workdir / f"unbound{len(started) or ''}", cert, key, port=port,
                       records=records, extra_conf=extra_conf, **kw)
        started.append(u)
        _add_log_source(request, f"unbound log ({u.workdir})", u.log)
        return u.start()

    yield start
    for u in started:
        u.stop()


@pytest.fixture
def unbound(unbound_factory):
    """A running private unbound serving DoT with certs.good."""
    return unbound_factory()


@pytest.fixture
def fake_plain():
    """Factory: fake_plain(**behaviour) -> started FakePlain, stopped at teardown."""
    started = []

    def start(**kw):
        f = FakePlain(**kw)
        started.append(f)
        return f.start()

    yield start
    errors = []
    for f in started:
        f.stop()
        errors += [f"fake plain server :{f.port}: {e}" for e in f.errors]
    if errors:
        pytest.fail("the fake plain server itself failed:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture
def fake_upstream(certs):
    """Factory: fake_upstream(tls=(cert, key), host=..., port=..., start=True, **behaviour).

    start=False returns it unstarted (port=... then fixes its port), for
    tests of an upstream that comes up late; it is stopped at teardown either way.
    """
    started = []

    def start(*, tls=None, start=True, **kw):
        cert, key = tls or certs.good
        f = FakeUpstream(cert, key, **kw)
        started.append(f)  # stopped at teardown even if the test starts it later
        return f.start() if start else f

    yield start
    errors = []
    for f in started:
        f.stop()
        errors += [f"fake upstream :{f.port}: {e}" for e in f.errors]
    if errors:
        pytest.fail("the fake upstream itself failed:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture
def fake_doh(certs, pki):
    """Factory: fake_doh(tls=(cert, key), cert_name=None, host=..., port=..., alpn=("h2",),
    start=True, **behaviour) -> FakeDoH (see fake_doh.py for the behaviours).

    cert_name="x.test" serves a fresh certificate from the session CA for that
    name alone (no IP address), e.g. a name other than the one a client expects;
    without it the fake serves certs.good (dns.example.test, 127.0.0.1, ::1).
    """
    from fake_doh import FakeDoH  # python3-h2 is needed by the DoH tests alone
    started = []

    def start(*, tls=None, cert_name=None, start=True, **kw):
        if tls is None and cert_name is not None:
            tls = pki.leaf(f"doh-{cert_name}", dns_names=[cert_name])
        cert, key = tls or certs.good
        f = FakeDoH(cert, key, **kw)
        started.append(f)
        return f.start() if start else f

    yield start
    errors = []
    for f in started:
        f.stop()
        errors += [f"fake DoH server :{f.port}: {e}" for e in f.errors]
    if errors:
        pytest.fail("the fake DoH server itself failed:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture
def doh_client(certs):
    """Factory: doh_client(server_or_port, **kw) -> DoHClient (see doh_client.py),
    trusting certs.ca_file and expecting dns.example.test unless told otherwise;
    closed at teardown."""
    from doh_client import DoHClient
    clients = []

    def connect(server, **kw):
        kw.setdefault("ca_file", certs.ca_file)
        kw.setdefault("server_hostname", AUTH_NAME)
        c = DoHClient(server if isinstance(server, int) else server.port, **kw)
        clients.append(c)
        return c

    yield connect
    for c in clients:
        c.close()


# -- the daemon under test ------------------------------------------------------------------

_DEFAULT = object()


@pytest.fixture
def dotproxy(request, workdir, certs):
    """Factory that runs the real binary ($DOTPROXY or <repo>/build/dotproxy).

    dotproxy(upstreams=[FakeUpstream | UnboundDoT | "IP@PORT#NAME", ...],
             extra_args=[...], listen=None | "ADDR:PORT" | [..],
             ca_file=certs.ca_file (None: no --ca-file), verbose=0 (number of -v),
             auth_name="dns.example.test" (for upstream objects; None: IP only),
             wait=True, start_timeout=5.0, binary=None, env=None) -> DotProxy
    """
    procs = []

    def start(upstreams=(), extra_args=(), listen=None, *, ca_file=_DEFAULT, verbose=0,
              auth_name=AUTH_NAME, wait=True, start_timeout=5.0, binary=None, env=None):
        binary = binary or binary_path()
        try:
            check_binary(binary)
        except FileNotFoundError as e:
            pytest.fail(str(e), pytrace=False)
        if listen is None:
            listen = f"127.0.0.1:{free_port()}"
        listens = [listen] if isinstance(listen, str) else list(listen)
        args = []
        for spec in listens:
            args += ["--listen", spec]
        for u in upstreams:
            args += ["--upstream", upstream_arg(u, auth_name)]
        if ca_file is _DEFAULT:
            ca_file = certs.ca_file
        if ca_file:
            args += ["--ca-file", str(ca_file)]
        args += ["-v"] * verbose
        args += [str(a) for a in extra_args]
        p = DotProxy(args, workdir=workdir, listen=listens, binary=binary, env=env,
                     name=f"dotproxy{len(procs) or ''}")
        procs.append(p)
        _add_log_source(request, f"{p.name} stderr ({p.log_file})", p.log)
        try:
            p.start(wait=wait, timeout=start_timeout)
        except (RuntimeError, TimeoutError) as e:
            pytest.fail(str(e), pytrace=False)
        return p

    yield start
    problems = []
    for p in procs:
        if p.proc is None:
            continue
        p.stop()
        probs = p.problems()
        if probs:
            problems.append(f"dotproxy {' '.join(p.args)}:\n  " + "\n  ".join(probs)
                            + "\n  log tail:\n" + p.log_tail(30))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
