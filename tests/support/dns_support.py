"""A tiny DNS server for tests: answers A/AAAA questions for names it is given.

gRPC's ``dns://<dns server>/<name>:<port>`` target asks that server instead of the
system's, so a test can give one name several loopback addresses (a headless
Service's view of its pods) without touching /etc/hosts.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import dns.exception
import dns.message
import dns.rdatatype
import dns.rrset


@contextmanager
def dns_server(records: Mapping[str, Sequence[str]]) -> Iterator[int]:
    """Serve ``{name: [address, ...]}`` over UDP on 127.0.0.1; yields the port.

    IPv4 addresses answer A questions, IPv6 ones AAAA; anything else gets an
    empty NOERROR answer.
    """
    zone = {name.rstrip(".") + ".": list(addresses) for name, addresses in records.items()}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stopping = threading.Event()

    def answer(query: dns.message.Message) -> bytes:
        response = dns.message.make_response(query)
        for question in query.question:
            wanted = {dns.rdatatype.A: ".", dns.rdatatype.AAAA: ":"}.get(question.rdtype)
            found = [a for a in zone.get(question.name.to_text(), []) if wanted and wanted in a]
            if found:
                response.answer.append(
                    dns.rrset.from_text_list(question.name, 1, "IN", question.rdtype, found)
                )
        return response.to_wire()

    def serve() -> None:
        while not stopping.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                sock.sendto(answer(dns.message.from_wire(data)), peer)
            except (dns.exception.DNSException, OSError):
                continue

    thread = threading.Thread(target=serve, name="test-dns", daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        stopping.set()
        thread.join(5)
        sock.close()
