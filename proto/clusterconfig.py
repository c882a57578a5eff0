"""The cluster's configuration, as KubeVirt's ``KubeVirt`` custom resource carries it (pure).

A KubeVirt user tunes the cluster by applying the KubeVirt CR (kubevirt.io/v1, ``kind: KubeVirt``);
virtbus reads the same manifest. What exists here is ``spec.configuration.developerConfiguration.
cpuAllocationRatio``: how many vCPUs each of a node's CPUs takes (KubeVirt requests 1/ratio of a CPU
per vCPU for each virt-launcher pod, so a node holds ``cpus * ratio`` vCPUs; default 10); and
``spec.configuration.evictionStrategy``, the default of every instance's (scheduler.nodemaintenance); and
``spec.configuration.migrations``: how many live migrations run at once (in the cluster, and out of
one node), and what each runs with (bandwidth, timeouts, auto-converge, TLS; proto.state.MigrationOptions).
Any other field is refused with its full path, unless it only names KubeVirt's own component images (virtbus
runs none) or is an empty default of KubeVirt's stock CR (``certificateRotateStrategy: {}``,
``featureGates: []``...), which change nothing here.

Applying the CR replaces the configuration as a whole (kubectl apply of a whole object): a field left
out goes back to its default. The control plane stores it under one key (proto.subjects) and every
scheduler process watches it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from proto import schema
from proto.errors import ApiError, Code
from proto.quantity import InvalidQuantity, format_bytes, parse_bytes
from proto.spec import EVICTION_STRATEGIES, EvictionStrategy
from proto.state import MigrationOptions
from proto.subjects import is_dns1123_label

API_VERSION = "kubevirt.io/v1"
API_VERSIONS = (API_VERSION, "kubevirt.io/v1alpha3")
KIND = "KubeVirt"
DEFAULT_NAME = "kubevirt"
DEFAULT_CPU_ALLOCATION_RATIO = 10  # KubeVirt's default
# Above 1000 a vCPU's share would be below a millicore, the smallest CPU quantity Kubernetes has: a
# ratio that high is a mistake (or a way round all CPU accounting), not a tuning.
MAX_CPU_ALLOCATION_RATIO = 1000
RATIO_PATH = "spec.configuration.developerConfiguration.cpuAllocationRatio"
KINDS = {"kubevirt": "kubevirt", "kubevirts": "kubevirt", "kv": "kubevirt"}  # what ``virtbus get`` takes

Ratio = Annotated[int, msgspec.Meta(ge=1, le=MAX_CPU_ALLOCATION_RATIO)]
MAX_PARALLEL = 1000
MAX_TIMEOUT_S = 7 * 86400
MAX_BANDWIDTH = 1 << 40  # a TiB a second: more is a mistake, not a limit
Parallel = Annotated[int, msgspec.Meta(ge=1, le=MAX_PARALLEL)]


class MigrationsConfig(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """spec.configuration.migrations, KubeVirt's defaults unless set."""

    parallel_migrations_per_cluster: Parallel = 5
    parallel_outbound_migrations_per_node: Parallel = 2
    options: MigrationOptions = MigrationOptions()  # what each migration runs with


class ClusterConfig(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """What the control plane stores and every scheduler process uses."""

    name: str = DEFAULT_NAME  # the CR's metadata.name, shown back
    cpu_allocation_ratio: Ratio = DEFAULT_CPU_ALLOCATION_RATIO
    updated_at: float = 0.0  # when it was applied; 0: never (the defaults)
    # spec.configuration.evictionStrategy: what an eviction does to an instance whose spec says none
    # (proto.spec.VMSpec.eviction_strategy); None: KubeVirt's default, "None"
    eviction_strategy: EvictionStrategy | None = None
    migrations: MigrationsConfig = MigrationsConfig()


DEFAULT = ClusterConfig()


class ClusterConfigReply(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    item: ClusterConfig


class _NoneListed(schema.Node):
    """A list virtbus has nothing to put in: only empty (KubeVirt's stock CR has ``featureGates: []``)."""

    def walk(self, value: Any, path: str) -> Any:
        items = schema.ListOf(schema.STR).walk(value, path)
        if items:
            raise schema.invalid(f"{path}[0]", f"{path}[0] {items[0]!r} is not supported by virtbus")
        return items


@dataclass(frozen=True)
class Between(schema.Node):
    low: int
    high: int
    unit: str

    def walk(self, value: Any, path: str) -> Any:
        schema.INT.walk(value, path)
        if not self.low <= value <= self.high:
            raise schema.invalid(path, f"{path} must be from {self.low} to {self.high} {self.unit}, not {value}")
        return value


class Bandwidth(schema.Node):
    """A quantity of bytes a second (64Mi); 0 (KubeVirt's default, 0Mi): no limit."""

    def walk(self, value: Any, path: str) -> Any:
        try:
            amount = parse_bytes(schema.QUANTITY.walk(value, path))
        except InvalidQuantity as exc:
            raise schema.invalid(path, f"{path}: {exc}") from None
        if amount > MAX_BANDWIDTH:
            raise schema.invalid(path, f"{path} must be at most 1Ti a second")
        return amount


_MIGRATIONS = schema.Object({
    "parallelMigrationsPerCluster": Between(1, MAX_PARALLEL, "migrations"),
    "parallelOutboundMigrationsPerNode": Between(1, MAX_PARALLEL, "migrations"),
    "bandwidthPerMigration": Bandwidth(),
    "completionTimeoutPerGiB": Between(1, MAX_TIMEOUT_S, "seconds"),
    "progressTimeout": Between(1, MAX_TIMEOUT_S, "seconds"),
    "allowAutoConverge": schema.BOOL,
    "disableTLS": schema.BOOL,
    "allowPostCopy": schema.Off(),  # post-copy: a guest whose memory is still at its source if that one is lost
})
_DEVELOPER = schema.Object({"cpuAllocationRatio": Between(1, MAX_CPU_ALLOCATION_RATIO, "vCPUs per CPU"),
                            "featureGates": _NoneListed(),
                            "disabledFeatureGates": _NoneListed()})
_SPEC = schema.Object({
    "configuration": schema.Object({"developerConfiguration": _DEVELOPER,
                                    "evictionStrategy": schema.Choice(EVICTION_STRATEGIES),
                                    "migrations": _MIGRATIONS}),
    # empty in KubeVirt's stock CR; any content is refused by EMPTY with its path
    **dict.fromkeys(("certificateRotateStrategy", "customizeComponents", "workloadUpdateStrategy"), schema.EMPTY),
    # which images KubeVirt's own components run from: virtbus runs none of them
    **dict.fromkeys(("imagePullPolicy", "imageRegistry", "imageTag"), schema.IGNORED),
})
_CR = schema.Object({"apiVersion": schema.STR, "kind": schema.STR, "metadata": schema.CLUSTER_METADATA, "spec": _SPEC,
                     "status": schema.IGNORED})


def is_kubevirt(obj: object) -> bool:
    return isinstance(obj, Mapping) and obj.get("kind") == KIND


def parse(obj: object, now: float) -> ClusterConfig:
    """A KubeVirt CR as its user wrote it, as the configuration it sets; typed errors name the field."""
    if not isinstance(obj, Mapping):
        raise schema.bad("", f"a {KIND} manifest is an object")
    schema.check_kind(obj, API_VERSIONS, KIND)
    tree = _CR.walk(obj, "")
    name = schema.required(tree.get("metadata", {}), "name", "metadata")
    if not is_dns1123_label(name):
        raise ApiError(Code.INVALID, f"{name[:64]!r} is not a valid name (a DNS-1123 label)", "metadata.name")
    configuration = tree.get("spec", {}).get("configuration", {})
    ratio = configuration.get("developerConfiguration", {}).get("cpuAllocationRatio", DEFAULT_CPU_ALLOCATION_RATIO)
    return ClusterConfig(name=name, cpu_allocation_ratio=ratio, updated_at=now,
                         eviction_strategy=configuration.get("evictionStrategy"),
                         migrations=_migrations(configuration.get("migrations", {})))


def _migrations(tree: Mapping[str, Any]) -> MigrationsConfig:
    default = MigrationsConfig()
    options = default.options
    return MigrationsConfig(
        parallel_migrations_per_cluster=tree.get("parallelMigrationsPerCluster",
                                                 default.parallel_migrations_per_cluster),
        parallel_outbound_migrations_per_node=tree.get("parallelOutboundMigrationsPerNode",
                                                       default.parallel_outbound_migrations_per_node),
        options=MigrationOptions(
            bandwidth_per_migration=tree.get("bandwidthPerMigration", options.bandwidth_per_migration),
            completion_timeout_per_gib=tree.get("completionTimeoutPerGiB", options.completion_timeout_per_gib),
            progress_timeout=tree.get("progressTimeout", options.progress_timeout),
            allow_auto_converge=tree.get("allowAutoConverge", options.allow_auto_converge),
            disable_tls=tree.get("disableTLS", options.disable_tls)))


def check(config: ClusterConfig) -> None:
    """A stored configuration holds to the API's rules (decoding checked the ratio's range)."""
    if not is_dns1123_label(config.name):
        raise ApiError(Code.INVALID, f"{config.name[:64]!r} is not a valid name", "name")
    check_migration_options(config.migrations.options, "migrations.options")


def check_migration_options(options: MigrationOptions, path: str) -> None:
    """A stored value's settings within what the CR may set (decoding checks only their types)."""
    for name, value, high in (("bandwidthPerMigration", options.bandwidth_per_migration, MAX_BANDWIDTH),
                              ("completionTimeoutPerGiB", options.completion_timeout_per_gib, MAX_TIMEOUT_S),
                              ("progressTimeout", options.progress_timeout, MAX_TIMEOUT_S)):
        low = 0 if name == "bandwidthPerMigration" else 1
        if not low <= value <= high:
            raise ApiError(Code.INVALID, f"{name} must be from {low} to {high}, not {value}", f"{path}.{name}")


def kubevirt_object(config: ClusterConfig) -> dict[str, Any]:
    """The configuration as the KubeVirt CR that sets it: ``get kubevirt -o yaml`` applies back as it is."""
    strategy = {"evictionStrategy": config.eviction_strategy} if config.eviction_strategy is not None else {}
    m, options = config.migrations, config.migrations.options
    migrations = {} if m == MigrationsConfig() else {"migrations": {
        "parallelMigrationsPerCluster": m.parallel_migrations_per_cluster,
        "parallelOutboundMigrationsPerNode": m.parallel_outbound_migrations_per_node,
        "bandwidthPerMigration": format_bytes(options.bandwidth_per_migration) if options.bandwidth_per_migration
        else "0Mi",
        "completionTimeoutPerGiB": options.completion_timeout_per_gib, "progressTimeout": options.progress_timeout,
        "allowAutoConverge": options.allow_auto_converge, "allowPostCopy": False, "disableTLS": options.disable_tls}}
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": config.name},
            "spec": {"configuration": {"developerConfiguration": {
                "cpuAllocationRatio": config.cpu_allocation_ratio}, **strategy, **migrations}}}
