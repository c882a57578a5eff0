"""A VMI's name resolution (Kubernetes' ``dnsPolicy`` and ``dnsConfig``, pure): which name servers and
search domains its guest's DHCP lease names, as KubeVirt's DHCP server hands on its launcher pod's.

- ClusterFirst (the default; ClusterFirstWithHostNet is the same for an instance, which is never on the
  host's network): the cluster DNS and the cluster's search list.
- Default: the node's own resolv.conf (its IPv4 name servers that are not loopback, its search list).
- None: nothing but ``dnsConfig``, which then needs a name server.
- ``dnsConfig`` adds its name servers and search domains after the policy's (duplicates left out, at
  most three name servers, as kubelet has them). Its ``options`` (ndots and such) are kept and written
  back: DHCP has no option for them, and KubeVirt's guests do not get them either.

DHCPv4 carries IPv4 name servers and one 255-byte option of search domains, so an IPv6 name server,
or a search list that option cannot hold, is refused with its path rather than dropped on the way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address
from typing import Any, TypeVar

from proto.errors import ApiError, Code
from proto.schema import NAMESPACE, STR, ListOf, Object
from proto.spec import DNSConfig, DNSOption, DNSPolicy
from proto.subjects import is_dns1123_label

CLUSTER_DOMAIN = "cluster.local"
# Where every guest asks names (kube-dns's address): each node answers it itself (handler.clusterdns).
CLUSTER_DNS_IP = IPv4Address("10.96.0.10")
# What a guest's resolver appends to a short name, as a pod's resolv.conf has it.
DNS_SEARCH = (f"{NAMESPACE}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN)

MAX_NAMESERVERS = 3  # Kubernetes' (and glibc's MAXNS)
MAX_SEARCHES = 32  # Kubernetes' MaxDNSSearchPaths
MAX_SEARCH_CHARS = 2048  # Kubernetes' MaxDNSSearchListChars
MAX_OPTIONS = 32
DHCP_OPTION_BYTES = 255  # one DHCP option (119, the search list) holds this much
DNS_CONFIG = Object({"nameservers": ListOf(STR), "searches": ListOf(STR),
                     "options": ListOf(Object({"name": STR, "value": STR}))})
_OPTION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_OPTION_VALUE = re.compile(r"[^\s#;]{0,255}")
_T = TypeVar("_T")


@dataclass(frozen=True)
class Resolver:
    """What a guest is told: its name servers and its search list, in order."""

    nameservers: tuple[IPv4Address, ...] = ()
    searches: tuple[str, ...] = ()


CLUSTER = Resolver((CLUSTER_DNS_IP,), DNS_SEARCH)


def read_dns_config(tree: Mapping[str, Any], path: str) -> DNSConfig:
    """A manifest's ``dnsConfig`` (walked by DNS_CONFIG) at ``path``; checked with check_dns."""
    options = [DNSOption(name=o.get("name", ""), value=o.get("value")) for o in tree.get("options", [])]
    return DNSConfig(nameservers=list(tree.get("nameservers", [])), searches=list(tree.get("searches", [])),
                     options=options)


def dns_config_manifest(config: DNSConfig) -> dict[str, Any]:
    """As Kubernetes writes it: read_dns_config reads it back the same."""
    options = [{"name": o.name, **({"value": o.value} if o.value is not None else {})} for o in config.options]
    return {k: v for k, v in (("nameservers", config.nameservers), ("searches", config.searches),
                              ("options", options)) if v}


def check_dns(policy: DNSPolicy, config: DNSConfig | None, field: str = "spec") -> None:
    """Kubernetes' rules for the pair, and what DHCPv4 can carry; ``field`` is the spec's path."""
    where = f"{field}.dnsConfig"
    if policy == "None" and (config is None or not config.nameservers):
        raise ApiError(Code.INVALID, "dnsPolicy None takes its name servers from dnsConfig.nameservers, which "
                                     "needs at least one", f"{where}.nameservers")
    if config is None:
        return
    if len(config.nameservers) > MAX_NAMESERVERS:
        raise ApiError(Code.INVALID, f"at most {MAX_NAMESERVERS} name servers", f"{where}.nameservers")
    for index, server in enumerate(config.nameservers):
        _nameserver(server, f"{where}.nameservers[{index}]")
    if len(config.searches) > MAX_SEARCHES:
        raise ApiError(Code.INVALID, f"at most {MAX_SEARCHES} search domains", f"{where}.searches")
    if len(" ".join(config.searches)) > MAX_SEARCH_CHARS:
        raise ApiError(Code.INVALID, f"the search list is longer than {MAX_SEARCH_CHARS} characters",
                       f"{where}.searches")
    for index, domain in enumerate(config.searches):
        if not _is_domain(domain):
            raise ApiError(Code.INVALID, f"search domain {domain!r} must be a DNS-1123 subdomain (lowercase "
                                         "labels of letters, digits and '-' joined by dots, at most 253 "
                                         "characters)", f"{where}.searches[{index}]")
    if len(config.options) > MAX_OPTIONS:
        raise ApiError(Code.INVALID, f"at most {MAX_OPTIONS} options", f"{where}.options")
    for index, option in enumerate(config.options):
        if not _OPTION_NAME.fullmatch(option.name):
            raise ApiError(Code.INVALID, f"option name {option.name!r} must be a resolver option's word (like "
                                         "ndots)", f"{where}.options[{index}].name")
        if option.value is not None and not _OPTION_VALUE.fullmatch(option.value):
            raise ApiError(Code.INVALID, "an option's value is one word, at most 255 characters",
                           f"{where}.options[{index}].value")
    if policy != "Default":  # the node's own search list is only known on the node: resolver() fits it
        length = search_bytes(_merged(policy, config, Resolver()).searches)
        if length > DHCP_OPTION_BYTES:
            raise ApiError(Code.INVALID, f"the guest's search list would take {length} bytes of DHCP option 119, "
                                         f"which holds {DHCP_OPTION_BYTES}", f"{where}.searches")


def resolver(policy: DNSPolicy, config: DNSConfig | None, host: Resolver) -> Resolver:
    """What the guest is told, from its policy, its dnsConfig and the node's resolv.conf (``host``)."""
    merged = _merged(policy, config, host)
    kept: list[str] = []
    for domain in merged.searches:  # a node's list may be longer than DHCP holds: those that fit, in order
        if search_bytes((*kept, domain)) <= DHCP_OPTION_BYTES:
            kept.append(domain)
    return Resolver(merged.nameservers[:MAX_NAMESERVERS], tuple(kept))


def _merged(policy: DNSPolicy, config: DNSConfig | None, host: Resolver) -> Resolver:
    """Kubernetes' appendDNSConfig: the policy's, then the config's, each once."""
    base = {"Default": host, "None": Resolver()}.get(policy, CLUSTER)
    servers = _unique([*base.nameservers, *(IPv4Address(s) for s in (config.nameservers if config else ()))])
    searches = _unique([*base.searches, *(d.rstrip(".") for d in (config.searches if config else ()))])
    return Resolver(tuple(servers), tuple(searches))


def read_resolv_conf(text: str) -> Resolver:
    """A node's resolv.conf as a guest may use it: IPv4 name servers that are not loopback (a local stub
    resolver answers the node, not its guests), and the search list (the last ``search`` or
    ``domain`` line wins, as glibc reads them)."""
    servers: list[IPv4Address] = []
    searches: tuple[str, ...] = ()
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                address = IPv4Address(words[1])
            except AddressValueError:
                continue  # IPv6, or not an address
            if not address.is_loopback and not address.is_unspecified:
                servers.append(address)
        elif len(words) >= 2 and words[0] in ("search", "domain"):
            searches = tuple(d.rstrip(".").lower() for d in words[1:] if _is_domain(d.rstrip(".").lower()))
    return Resolver(tuple(_unique(servers)), searches)


def search_bytes(domains: Iterable[str]) -> int:
    """How long option 119 is with these names in DNS wire form (a length byte a label, a zero a name)."""
    return sum(len(d) + 2 for d in domains)


def _nameserver(server: str, field: str) -> None:
    try:
        IPv4Address(server)
    except AddressValueError:
        raise ApiError(Code.INVALID, f"name server {server!r} must be an IPv4 address: the guest learns its "
                                     "name servers by DHCPv4, which carries IPv4 addresses only", field) from None


def _is_domain(domain: str) -> bool:
    name = domain.removesuffix(".")
    return 0 < len(name) <= 253 and all(is_dns1123_label(label) for label in name.split("."))


def _unique(items: Iterable[_T]) -> list[_T]:
    return list(dict.fromkeys(items))
