"""Answer one DNS query from the directory: A, AAAA, SRV for services; NXDOMAIN for the rest
of the cluster domain; other names forwarded or refused. Sans-IO: a message in, a message out."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from gossamer.discovery.directory import Directory, ServiceRecord


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """How the mesh DNS answers."""

    domain: str = "cluster.local"
    default_namespace: str = "default"
    ttl: int = 5
    # Resolvers for names outside the mesh ("8.8.8.8:53"); empty means refuse them.
    forwarders: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Lookup:
    """What a query name means in the mesh."""

    service: str
    namespace: str
    port_name: str | None = None
    protocol: str | None = None


class OutsideError(Exception):
    """The name is not the mesh's to answer: forward it or refuse it."""


def parse_name(
    qname: dns.name.Name, config: DnsConfig, namespaces: frozenset[str]
) -> Lookup | None:
    """Map a query name to a service, None for an unknown name in the cluster domain.

    Accepted forms: svc, svc.ns, svc.ns.svc, svc.ns.svc.DOMAIN, each optionally prefixed with
    _port._proto for SRV; and pod.svc.ns.svc.DOMAIN, a StatefulSet's replica. Raises
    OutsideError for names that are not the mesh's.
    """
    labels = [
        label.decode("ascii", "replace").lower() for label in qname.relativize(dns.name.root).labels
    ]
    domain = config.domain.lower().split(".")
    in_domain = len(labels) > len(domain) and labels[-len(domain) :] == domain
    if in_domain:
        labels = labels[: -len(domain)]
        if len(labels) < 3 or labels[-1] != "svc":
            return None
        labels = labels[:-1]
    elif labels and labels[-1] == "svc":
        labels = labels[:-1]
    port_name = protocol = None
    if len(labels) >= 3 and labels[0].startswith("_") and labels[1].startswith("_"):
        port_name, protocol = labels[0][1:], labels[1][1:]
        labels = labels[2:]
    if len(labels) == 1 and not in_domain:
        return Lookup(labels[0], config.default_namespace, port_name, protocol)
    if len(labels) == 2 and (in_domain or labels[1] in namespaces):
        return Lookup(labels[0], labels[1], port_name, protocol)
    if len(labels) == 3 and in_domain:
        # POD.SERVICE.NS: a StatefulSet replica under its governing Service (snapshot/podnames.py).
        return Lookup(f"{labels[0]}.{labels[1]}", labels[2], port_name, protocol)
    if in_domain:
        return None
    raise OutsideError(str(qname))


def answer(
    query: dns.message.Message, directory: Directory, config: DnsConfig
) -> dns.message.Message:
    """The response to `query`; raises OutsideError when the name must be forwarded or refused."""
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    if not query.question:
        response.set_rcode(dns.rcode.FORMERR)
        return response
    question = query.question[0]
    lookup = parse_name(question.name, config, directory.namespaces())
    record = directory.lookup(lookup.service, lookup.namespace) if lookup else None
    if lookup is None or record is None:
        response.set_rcode(dns.rcode.NXDOMAIN)
        response.authority.append(_soa(config))
        return response
    rdtype = question.rdtype
    if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.ANY):
        _addresses(response, question.name, record, rdtype, config.ttl)
    found = rdtype in (dns.rdatatype.SRV, dns.rdatatype.ANY) and _services(
        response, question.name, record, lookup, config
    )
    if lookup.port_name is not None and not found:
        # _port._proto names exist only for the ports the service has.
        response.set_rcode(dns.rcode.NXDOMAIN)
    if not response.answer:
        response.authority.append(_soa(config))
    return response


def _addresses(
    response: dns.message.Message,
    name: dns.name.Name,
    record: ServiceRecord,
    rdtype: dns.rdatatype.RdataType,
    ttl: int,
) -> None:
    for kind in (dns.rdatatype.A, dns.rdatatype.AAAA):
        if rdtype not in (kind, dns.rdatatype.ANY):
            continue
        version = 4 if kind == dns.rdatatype.A else 6
        found = [a for a in record.a_records() if ipaddress.ip_address(a).version == version]
        if found:
            response.answer.append(
                dns.rrset.from_text_list(name, ttl, dns.rdataclass.IN, kind, found)
            )


def _services(
    response: dns.message.Message,
    name: dns.name.Name,
    record: ServiceRecord,
    lookup: Lookup,
    config: DnsConfig,
) -> bool:
    ports = [
        p
        for p in record.ports
        if lookup.port_name is None
        or (p.name == lookup.port_name and p.protocol == (lookup.protocol or "tcp"))
    ]
    if not ports:
        return False
    target = dns.name.from_text(f"{record.name}.{record.namespace}.svc.{config.domain}")
    texts = [f"0 100 {p.port} {target}" for p in ports]
    response.answer.append(
        dns.rrset.from_text_list(name, config.ttl, dns.rdataclass.IN, dns.rdatatype.SRV, texts)
    )
    addresses = record.a_records()
    v4 = [a for a in addresses if ipaddress.ip_address(a).version == 4]
    if v4:
        response.additional.append(
            dns.rrset.from_text_list(target, config.ttl, dns.rdataclass.IN, dns.rdatatype.A, v4)
        )
    return True


def _soa(config: DnsConfig) -> dns.rrset.RRset:
    zone = dns.name.from_text(config.domain)
    text = f"ns.dns.{config.domain}. hostmaster.{config.domain}. 1 7200 1800 86400 {config.ttl}"
    return dns.rrset.from_text(zone, config.ttl, dns.rdataclass.IN, dns.rdatatype.SOA, text)
