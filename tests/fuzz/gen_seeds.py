#!/usr/bin/python3
"""Write the seed corpora of the fuzz targets into tests/fuzz/corpus/.

The wire seeds are real DNS messages made with dnspython (queries, responses
with compression, EDNS, truncation-sized answers) plus a few hand-made
malformed ones that sit right at the parser's checks.  The framing, options,
local data and DoH server seeds follow the input layouts documented in
fuzz_framing.c, fuzz_options.c, fuzz_localdata.c and fuzz_doh_server.c.
Re-running overwrites the files with the same content, so the committed
corpus stays reproducible (hence want_shuffle=False: dnspython otherwise
shuffles the records of each RRset).

The DoH seeds are what a server sends: python3-h2 plays both a client that
asks as lib/doh does (streams 1, 3, 5, 7) and the server that answers it,
and the server's bytes follow the two header bytes of fuzz_doh.c's layout.

Usage: gen_seeds.py [wire] [framing] [options] [localdata] [doh] [http1] [ctlproto] [doh_server]
(default: all; the wire and doh seeds need dnspython, the doh seeds python3-h2)
"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    path = os.path.join(HERE, "corpus", target, name)
    with open(path, "wb") as f:
        f.write(data)


def query(name, rdtype, edns=-1, payload=1232, want_dnssec=False, options=None, qid=0x1234):
    import dns.message
    q = dns.message.make_query(name, rdtype, use_edns=edns, payload=payload,
                               want_dnssec=want_dnssec, options=options)
    q.id = qid
    return q


def wire_seeds():
    import dns.edns
    import dns.flags
    import dns.message
    import dns.rcode
    import dns.rrset
    t = "fuzz_wire_parse"
    write(t, "query_a", query("www.example.com", "A").to_wire(want_shuffle=False))
    write(t, "query_aaaa_edns", query("example.org", "AAAA", edns=0, payload=4096).to_wire(want_shuffle=False))
    write(t, "query_do_cookie", query("dnssec.example", "DNSKEY", edns=0, want_dnssec=True,
          options=[dns.edns.GenericOption(10, b"\x01\x02\x03\x04\x05\x06\x07\x08")]).to_wire(want_shuffle=False))
    write(t, "query_root_ns", query(".", "NS").to_wire(want_shuffle=False))
    write(t, "query_mixed_case", query("WwW.ExAmPlE.CoM", "MX", edns=0).to_wire(want_shuffle=False))

    # Answer with a CNAME chain, compressed against the question.
    q = query("www.example.com", "A", edns=0)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("www.example.com.", 300, "IN", "CNAME", "web.example.com."))
    r.answer.append(dns.rrset.from_text("web.example.com.", 300, "IN", "A", "192.0.2.1", "192.0.2.2"))
    r.authority.append(dns.rrset.from_text("example.com.", 3600, "IN", "NS", "ns1.example.com.",
                                           "ns2.example.com."))
    r.additional.append(dns.rrset.from_text("ns1.example.com.", 3600, "IN", "A", "192.0.2.53"))
    r.additional.append(dns.rrset.from_text("ns2.example.com.", 3600, "IN", "AAAA", "2001:db8::53"))
    write(t, "response_cname_glue", r.to_wire(want_shuffle=False))

    # NXDOMAIN with SOA in the authority section.
    q = query("nope.example.net", "A", edns=0, want_dnssec=True)
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.NXDOMAIN)
    r.authority.append(dns.rrset.from_text("example.net.", 900, "IN", "SOA",
                                           "ns.example.net. hostmaster.example.net. 1 7200 900 1209600 86400"))
    write(t, "response_nxdomain_soa", r.to_wire(want_shuffle=False))

    # Larger than 512: the truncation path.
    q = query("big.example", "TXT", edns=0, payload=4096)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("big.example.", 60, "IN", "TXT",
                                        *['"%s"' % ("x" * 200) for _ in range(4)]))
    r.answer.append(dns.rrset.from_text("big.example.", 60, "IN", "A",
                                        *["198.51.100.%d" % i for i in range(1, 40)]))
    write(t, "response_big_txt", r.to_wire(want_shuffle=False))

    # Response without EDNS, no RA, MX with compressed exchange names.
    q = query("example.com", "MX")
    r = dns.message.make_response(q)
    r.flags &= ~dns.flags.RA
    r.answer.append(dns.rrset.from_text("example.com.", 300, "IN", "MX", "10 mx1.example.com.",
                                        "20 mx2.example.com."))
    write(t, "response_mx_noedns", r.to_wire(want_shuffle=False))

    # SERVFAIL with an Extended DNS Error.
    q = query("fail.example", "A", edns=0)
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.SERVFAIL)
    r.use_edns(0, 0, 1232, options=[dns.edns.EDEOption(dns.edns.EDECode.NETWORK_ERROR)])
    write(t, "response_servfail_ede", r.to_wire(want_shuffle=False))

    # Hand-made, at the edges of the checks.
    hdr = lambda qd, an=0, ns=0, ar=0, flags=0x0100: struct.pack("!HHHHHH", 0xabcd, flags, qd, an, ns, ar)
    q_a = b"\x07example\x00\x00\x01\x00\x01"
    write(t, "bad_short", hdr(1)[:11])
    write(t, "bad_qdcount0", hdr(0))
    write(t, "bad_qdcount2", hdr(2) + q_a + q_a)
    write(t, "bad_ptr_self", hdr(1) + b"\xc0\x0c\x00\x01\x00\x01")
    write(t, "bad_ptr_forward", hdr(1) + b"\xc0\x12\x00\x01\x00\x01\x01x\x00")
    write(t, "bad_label_0x40", hdr(1) + b"\x41x\x00\x00\x01\x00\x01")
    write(t, "bad_two_opt", hdr(1, ar=2) + q_a + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00" * 2)
    write(t, "bad_opt_in_answer", hdr(1, an=1) + q_a + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00")
    write(t, "bad_rdlength", hdr(1, an=1, flags=0x8180) + q_a + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x05\x01\x02\x03\x04")
    long_name = (b"\x3f" + b"a" * 63) * 3 + b"\x3d" + b"b" * 61 + b"\x00"
    write(t, "name_255", hdr(1) + long_name + b"\x00\x10\x00\x01")

    # Regressions (see test_wire.c): a question compressed into the header,
    # which wire_truncate() used to change; and an OPT followed by glue whose
    # pointer targets a name after the OPT, which wire_strip_opt() used to
    # corrupt by moving the records back.  regress_ptr_into_header_set_id and
    # regress_ptr_into_header_strip_opt were found by the fuzzer and are kept
    # as found (this script does not write them).
    a_rr = struct.pack("!HHIH", 1, 1, 300, 4) + bytes([192, 0, 2, 1])
    write(t, "regress_ptr_into_header_truncate",
          struct.pack("!HHHHHH", 1, 0x8000, 1, 1, 0, 0) + b"\xc0\x05\x00\x01\x00\x01\x00" + a_rr)
    body = struct.pack("!HHHHHH", 9, 0x8080, 1, 0, 0, 3) + q_a + b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
    ns1 = len(body)
    body += b"\x03ns1\xc0\x0c" + a_rr + struct.pack("!H", 0xc000 | ns1) + a_rr
    write(t, "regress_strip_opt_not_last", body)


def framing_seeds():
    t = "fuzz_framing"
    frame = lambda payload: struct.pack("!H", len(payload)) + payload
    stream = frame(b"\x12\x34query") + frame(b"") + frame(b"x" * 300) + frame(b"tail")
    # control byte: bits 0-2 = number of chunk sizes, bit 3 = hold mode (a second
    # header byte follows), bits 4-6 = stop after N frames, bit 7 = the callback
    # scribbles over each frame.
    write(t, "whole", b"\x00" + stream)
    write(t, "bytewise", b"\x01\x01" + stream)
    write(t, "uneven_chunks", b"\x04\x03\x00\x07\xff" + stream)
    write(t, "split_prefix", b"\x02\x01\x05" + stream)
    write(t, "stop_after_two", b"\x21\x02" + stream)
    write(t, "scribble", b"\x83\x05\x40\x11" + stream)
    write(t, "partial_tail", b"\x01\x03" + stream + b"\x10")
    write(t, "zero_frames", b"\x01\x01" + b"\x00\x00" * 8)
    # Hold mode, second header byte: low nibble = k - 1 (FRAMING_HOLD on every
    # k-th frame), high nibble = chunks fed after a hold before resuming.
    write(t, "hold_every_frame", b"\x08\x00" + stream)
    write(t, "hold_bytewise", b"\x09\x21\x01" + stream)
    write(t, "hold_feed_while_held", b"\x0b\xf0\x03\x00\x07" + stream)
    # Chunks end exactly at frame ends: each hold leaves nothing to hold.
    write(t, "hold_at_chunk_ends", b"\x0d\x10\x09\x02\xff\x2f\x06" + stream)
    # The third frame, delivered by framing_resume(), stops.
    write(t, "hold_then_stop", b"\x38\x00" + stream)
    write(t, "hold_scribble_tail", b"\x8b\x12\x05\x40\x11" + stream + b"\x10")
    small = b"".join(frame(bytes([i]) * (i % 5)) for i in range(40))
    write(t, "hold_many_small", b"\x0a\x31\x03\x04" + small)


def options_seeds():
    t = "fuzz_options"
    write(t, "cli_upstreams", b"--upstream\x001.2.3.4@8853#dns.example\x00--upstream\x00"
          b"2620:fe::fe@853#dns.quad9.net\x00--listen=[::1]:5353\x00-vv")
    write(t, "cli_numbers", b"--timeout=1500\x00--max-inflight\x00100\x00--tcp-idle-timeout\x0010\x00"
          b"--max-tcp-clients=7\x00--max-tcp-pipeline\x0065535\x00--log-queries")
    write(t, "cli_help", b"--help")
    write(t, "cli_version", b"-V\x00--check-config")
    write(t, "cli_bad", b"--listen\x00::1:53\x00--upstream\x00dns.example\x00--bogus")
    write(t, "config_file", b"# dotproxy\nlisten 127.0.0.1:5300\nlisten [::1]:5300\n\n"
          b"upstream 9.9.9.9@853#dns.quad9.net\nupstream 1.1.1.1 # comment\n"
          b"ca-file /etc/ssl/certs/ca-certificates.crt\ntimeout 2000\nverbose\nlog-queries\n")
    write(t, "config_errors", b"listen\nbogus 1\nlog-queries yes\ntimeout abc\nconfig /x\n")
    write(t, "with_config", b"--config\x00ignored\x00--timeout\x00100")
    # The checks of the options together, and the comment that would cut a name.
    write(t, "config_duplicates", b"listen 127.0.0.1:53\nlisten 127.0.0.1:0053\nlisten 0.0.0.0:54\n"
          b"listen 127.0.0.1:54\nupstream 2620:fe::fe\nupstream 2620:00fe::fe@853\n"
          b"forward-zone corp.example=10.0.0.1,10.0.0.1@853\n")
    write(t, "config_contradictions", b"cache-min-ttl 600\ncache-max-ttl 60\ncache-size 0\n"
          b"serve-stale 10\nblock-action null\nprofile opportunistic\n"
          b"upstream 1.2.3.4#a.example^47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n")
    write(t, "config_cut_name", b"upstream 127.0.0.1@8853 #dns.example\n"
          b"forward-zone lan=10.0.0.1,10.0.0.2^47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU= #n.lan\n"
          b"upstream 9.9.9.9:853#dns.quad9.net\nupstream [2620:fe::fe]:853\nlisten ::1@53\n")


def localdata_seeds():
    # Each input is both a list of --local-data lines and a hosts file.
    t = "fuzz_localdata"
    os.makedirs(os.path.join(HERE, "corpus", t), exist_ok=True)
    write(t, "every_type", b"nas.home.arpa A 192.168.1.10\n"
          b"nas.home.arpa. 60 AAAA 2001:db8::10\n"
          b"www.home.arpa 300 IN CNAME nas.home.arpa.\n"
          b"10.1.168.192.in-addr.arpa PTR nas.home.arpa\n"
          b"home.arpa MX 10 mail.home.arpa\n"
          b"nomail.example MX 0 .\n"
          b"_sip._tcp.home.arpa IN 60 SRV 1 5 5060 pbx.home.arpa\n"
          b"t.home.arpa TXT \"v=spf1 -all\" \"two words\" \"\"\n")
    write(t, "txt_escapes", b"a.example TXT \"quote \\\" backslash \\\\ byte \\065 \\255\"\n"
          b"b.example TXT \"x\"\"y\"\n"
          b"c.example TXT \"\\1\"\n"
          b"d.example TXT \"open\n"
          b"e.example TXT unquoted\n"
          b"f.example TXT \"" + b"x" * 256 + b"\"\n")
    write(t, "cname_chain_and_loop", b"c0.example CNAME c1.example\n" +
          b"".join(b"c%d.example CNAME c%d.example\n" % (i, i + 1) for i in range(1, 10)) +
          b"c10.example A 192.0.2.1\n"
          b"loop1.example CNAME loop2.example\nloop2.example CNAME Loop1.Example.\n"
          b"self.example CNAME self.example\n"
          b"c5.example A 192.0.2.9\nc10.example CNAME c0.example\n")
    write(t, "line_errors", b"x.example NS ns.example\nx.example FOO 1\nx.example A 1.2.3\n"
          b"x.example AAAA 192.0.2.1\nx..example A 192.0.2.1\n*.example A 192.0.2.1\n"
          b"x.example 2147483648 A 192.0.2.1\nx.example 1h A 192.0.2.1\nx.example CH TXT \"x\"\n"
          b"x.example MX mail\nx.example SRV 1 2 3\nx.example A 192.0.2.1 192.0.2.2\n"
          b". A 192.0.2.1\nx.example\n\n   \n")
    write(t, "duplicates_ttls", b"d.example A 192.0.2.1\nD.EXAMPLE. A 192.0.2.1\n"
          b"d.example 600 A 192.0.2.1\nd.example 900 A 192.0.2.2\n"
          b"m.example MX 10 Mail.example\nm.example MX 10 mail.EXAMPLE.\n")
    write(t, "etc_hosts", b"\xef\xbb\xbf# /etc/hosts\n127.0.0.1\tlocalhost\n"
          b"127.0.1.1\tbox.home.arpa\tbox\n\n"
          b"192.168.1.10  nas.home.arpa nas files # the NAS\r\n"
          b"192.168.1.10 second.home.arpa\n2001:db8::10 nas.home.arpa\n"
          b"::1 localhost ip6-localhost ip6-loopback\nff02::1 ip6-allnodes\n"
          b"fe80::1%lo0 scoped\n127.0.0.30 thirty\n192.168.1.10 nas.home.arpa\n")
    write(t, "hosts_errors", b"192.168.1.1 ok\n1.2.3 nas\n192.168.1.2\n"
          b"192.168.1.3 bad!name\n")
    write(t, "hosts_nul", b"192.168.1.1 a\n192.168.1.2 b\x00c\n")
    write(t, "hosts_vs_local_data", b"nas.home.arpa CNAME box.home.arpa\n"
          b"192.168.1.10 nas.home.arpa\n20.1.168.192.in-addr.arpa CNAME x.example\n"
          b"192.168.1.20 twenty\n")
    label = b"x" * 62
    long = [b"%c%s.%s.%s.abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghij"
            % (ord("a") + i, label, label, label) for i in range(10)]
    write(t, "long_names", b"".join(b"%s CNAME %s\n" % (long[i], long[i + 1]) for i in range(9)) +
          b"%s A 192.0.2.1\n" % long[9])
    # Two strings of 250 bytes a record: the name's answer budget runs out.
    write(t, "name_budget", b"".join(b"big.example TXT \"%0250d\" \"%0250d\"\n" % (i, i)
                                      for i in range(34)))


def doh_seeds():
    import dns.message
    import dns.rrset
    import h2.config
    import h2.connection
    import h2.events
    t = "fuzz_doh"
    os.makedirs(os.path.join(HERE, "corpus", t), exist_ok=True)

    q = dns.message.make_query("www.example.", "A", use_edns=False)
    q.id = 0
    query_wire = q.to_wire()
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("www.example.", 300, "IN", "A", "192.0.2.10"))
    answer = r.to_wire()
    r.id = 0x1234
    answer_wrong_id = r.to_wire()

    def conversation(n, respond, get=False, settings=None):
        """The server's bytes: its preface, then whatever respond() sends
        for the n streams a client opened as lib/doh would."""
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        server = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        client.initiate_connection()
        server.initiate_connection()
        if settings:
            server.update_settings(settings)
        for _ in range(n):
            sid = client.get_next_available_stream_id()
            hdrs = [(":method", "GET" if get else "POST"), (":scheme", "https"),
                    (":authority", "dns.test"), (":path", "/dns-query"),
                    ("accept", "application/dns-message")]
            if not get:
                hdrs += [("content-type", "application/dns-message"),
                         ("content-length", str(len(query_wire)))]
            client.send_headers(sid, hdrs, end_stream=get)
            if not get:
                client.send_data(sid, query_wire, end_stream=True)
        events = server.receive_data(client.data_to_send())
        streams = [e.stream_id for e in events if isinstance(e, h2.events.RequestReceived)]
        assert len(streams) == n
        respond(server, streams)
        return server.data_to_send()

    def reply(server, sid, status="200", ctype="application/dns-message", body=answer,
              extra=()):
        hdrs = [(":status", status)]
        if ctype:
            hdrs.append(("content-type", ctype))
        hdrs += [("content-length", str(len(body)))] + list(extra)
        server.send_headers(sid, hdrs)
        server.send_data(sid, body, end_stream=True)

    def seed(name, n, respond, get=False, chunk=0, flags=0, tail=b"", **kw):
        head = bytes([(get and 1 or 0) | (n - 1) << 1 | flags, chunk])
        write(t, name, head + conversation(n, respond, get=get, **kw) + tail)

    def all_ok(server, streams):
        for sid in streams:
            reply(server, sid)

    seed("answer_post", 1, all_ok)
    seed("answer_get", 1, all_ok, get=True)
    seed("answers_four_bytewise", 4, all_ok, chunk=1, flags=0x10)
    seed("answer_age", 1, lambda s, ids: reply(s, ids[0], extra=[("age", "100")]))
    seed("answer_wrong_id", 1, lambda s, ids: reply(s, ids[0], body=answer_wrong_id))
    seed("answer_not_dns", 1, lambda s, ids: reply(s, ids[0], body=b"<html>hello</html>"))
    seed("status_503", 1, lambda s, ids: reply(s, ids[0], status="503", ctype="text/plain",
                                               body=b"busy"))
    seed("content_type_html", 2, lambda s, ids: [reply(s, i, ctype="text/html") for i in ids])

    def refuse_one(server, ids):
        server.reset_stream(ids[0], error_code=7)  # REFUSED_STREAM
        server.reset_stream(ids[1], error_code=2)  # INTERNAL_ERROR
        reply(server, ids[2])
    seed("refused_and_reset", 3, refuse_one, flags=0x08)

    def goaway(server, ids):
        reply(server, ids[0])
        server.close_connection(error_code=0, last_stream_id=ids[0])
    seed("goaway_after_first", 4, goaway, flags=0x10)

    def interleave(server, ids):
        for sid in ids:
            server.send_headers(sid, [(":status", "200"),
                                      ("content-type", "application/dns-message")])
        for k in range(0, len(answer), 7):
            for sid in ids:
                server.send_data(sid, answer[k:k + 7])
        for sid in ids:
            server.end_stream(sid)
    seed("interleaved_chunks", 4, interleave, chunk=5)
    seed("one_stream_at_a_time", 2, all_ok, settings={3: 1})  # MAX_CONCURRENT_STREAMS

    def informational(server, ids):
        server.send_headers(ids[0], [(":status", "103"), ("link", "</x>")])
        reply(server, ids[0])
    seed("informational_then_answer", 1, informational)
    # length 8, type PING, flags ACK, stream 0; the opaque data of our first PING
    ping_ack = b"\x00\x00\x08\x06\x01\x00\x00\x00\x00" + bytes([1, 0, 0, 0, 0, 0, 0, 0])
    seed("ping_ack", 1, all_ok, tail=ping_ack)
    seed("garbage_after_preface", 1, lambda s, ids: None, tail=b"\xff" * 40)
def http1_seeds():
    t = "fuzz_http1"
    os.makedirs(os.path.join(HERE, "corpus", t), exist_ok=True)
    write(t, "prometheus", b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9153\r\n"
          b"User-Agent: Prometheus/2.45.0\r\nAccept: application/openmetrics-text;"
          b"version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n"
          b"Accept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n")
    write(t, "http10_lf", b"\nGET /metrics?x=1 HTTP/1.0\nConnection: close\n\n")
    write(t, "not_found", b"GET /favicon.ico HTTP/1.1\r\nHost: x\r\n\r\n")
    write(t, "post", b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    write(t, "no_host", b"GET /metrics HTTP/1.1\r\nAccept: */*\r\n\r\n")
    write(t, "version", b"GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n")
    write(t, "folded", b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n")
    write(t, "bare_cr", b"GET /metrics HTTP/1.1\rHost: x\r\n\r\n")
    write(t, "half", b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    write(t, "big_header", b"GET /metrics HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 9000 + b"\r\n\r\n")


def ctlproto_seeds():
    t = "fuzz_ctlproto"
    os.makedirs(os.path.join(HERE, "corpus", t), exist_ok=True)
    for name, line in [("stats", b"stats"), ("json_upstreams", b"--json upstreams"),
                       ("flush_all", b"flush"), ("flush_name", b"flush Example.COM."),
                       ("flush_root", b"--json\tflush  .\r"), ("reload", b"reload"),
                       ("bad_option", b"--yaml stats"), ("bad_name", b"flush a..b"),
                       ("escape", b"flush a\\.b"), ("binary", b"stats\x00\xff"),
                       ("too_many", b"flush a b c d e")]:
        write(t, name, line)
def doh_server_seeds():
    """Requests in fuzz_doh_server.c's layout: structured (method, flags,
    path, content type, body) and raw HTTP/2 frames after the preface."""
    import base64
    import struct as st
    t = "fuzz_doh_server"
    q = query("www.example.com", "A", qid=0).to_wire(want_shuffle=False)
    b64 = base64.urlsafe_b64encode(q).rstrip(b"=")

    def req(method, path, body=b"", ct=b"application/dns-message", flags=1):
        return (bytes([method, flags]) + st.pack(">H", len(path)) + path +
                bytes([len(ct)]) + ct + st.pack(">H", len(body)) + body)

    get = req(0, b"/dns-query?dns=" + b64, flags=0)
    post = req(1, b"/dns-query", q, flags=1 | 8)
    head = req(2, b"/dns-query?dns=" + b64, flags=0)
    write(t, "get_post_head_answered", bytes([2]) + get + post + head)
    write(t, "get_post_head_waiting", bytes([0]) + get + post + head)
    write(t, "reset_streams", bytes([0]) + req(0, b"/dns-query?dns=" + b64, flags=4) +
          req(1, b"/dns-query", q, flags=1 | 4))
    write(t, "statuses", bytes([2]) + req(0, b"/other?dns=" + b64, flags=0) +
          req(3, b"/dns-query", q) + req(9, b"/dns-query", q) +
          req(1, b"/dns-query", q, ct=b"text/plain") +
          req(1, b"/dns-query", q, flags=1 | 8 | 16) +
          req(0, b"/dns-query?dns=" + b"A" * 5000, flags=0) +
          req(0, b"/dns-query?x=1&dns=" + b64 + b"&y", flags=0) +
          req(0, b"/dns-query?dns=not*base64", flags=0) +
          req(1, b"/dns-query", b"", flags=1) +
          req(1, b"/dns-query", q[:11]))
    write(t, "big_body", bytes([2]) + req(1, b"/dns-query", q + bytes(20000), flags=1))

    def frame(typ, flags, sid, payload):
        return st.pack(">I", len(payload))[1:] + bytes([typ, flags]) + st.pack(">I", sid) + payload

    settings = frame(4, 0, 0, b"")
    # A HEADERS block (HPACK, literal without indexing) for GET /dns-query?dns=...
    def lit(name, value):
        return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value
    block = (lit(b":method", b"GET") + lit(b":scheme", b"https") +
             lit(b":authority", b"dns.example") + lit(b":path", b"/dns-query?dns=" + b64))
    headers = frame(1, 0x5, 1, block)  # END_STREAM | END_HEADERS
    write(t, "raw_get", bytes([3, 7]) + settings + headers)
    write(t, "raw_rapid_reset", bytes([1, 63]) + settings + b"".join(
        frame(1, 0x5, sid, block) + frame(3, 0, sid, st.pack(">I", 8))
        for sid in range(1, 301, 2)))
    write(t, "raw_continuations", bytes([1, 0]) + settings + frame(1, 0x1, 1, block[:1]) +
          b"".join(frame(9, 0, 1, block[i:i + 1]) for i in range(1, len(block))))
    write(t, "raw_ping_settings", bytes([1, 5]) + settings + frame(6, 0, 0, bytes(8)) * 3 +
          frame(4, 0, 0, st.pack(">HI", 3, 10)) + frame(8, 0, 0, st.pack(">I", 1000)))
    write(t, "raw_http1", bytes([1, 64]) + b"GET /dns-query?dns=" + b64 + b" HTTP/1.1\r\n\r\n")


TARGETS = {
    "wire": wire_seeds,
    "framing": framing_seeds,
    "options": options_seeds,
    "localdata": localdata_seeds,
    "doh": doh_seeds,
    "http1": http1_seeds,
    "ctlproto": ctlproto_seeds,
    "doh_server": doh_server_seeds,
}


def main(argv):
    for name in argv or list(TARGETS):
        if name not in TARGETS:
            print("unknown target %r (known: %s)" % (name, " ".join(TARGETS)), file=sys.stderr)
            return 2
        TARGETS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
