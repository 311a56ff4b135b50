"""What a pod reads from other objects: ConfigMap and Secret values as environment variables and
files, and the Downward API's fields. Pure: validation reports what is missing, `up` uses values."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from gossamer.resources.base import Resource
from gossamer.resources.kinds.apps import (
    LABEL_FIELD,
    ConfigMapVolumeSource,
    Container,
    KeySelector,
    KeyToPath,
    ObjectReference,
    PodSpec,
    SecretVolumeSource,
)
from gossamer.resources.kinds.config import ConfigMap, Secret
from gossamer.resources.yamlsource import FieldPath

_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
DEFAULT_MODE = 0o644


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """The ConfigMaps and Secrets pods may read, by (namespace, name), as bytes per key."""

    config_maps: Mapping[tuple[str, str], Mapping[str, bytes]] = field(default_factory=dict)
    secrets: Mapping[tuple[str, str], Mapping[str, bytes]] = field(default_factory=dict)

    @classmethod
    def of(cls, resources: Iterable[Resource]) -> ConfigSource:
        """Every ConfigMap and Secret among `resources`."""
        config_maps: dict[tuple[str, str], Mapping[str, bytes]] = {}
        secrets: dict[tuple[str, str], Mapping[str, bytes]] = {}
        for resource in resources:
            if isinstance(resource, ConfigMap):
                config_maps[(resource.namespace, resource.name)] = resource.values()
            elif isinstance(resource, Secret):
                secrets[(resource.namespace, resource.name)] = resource.values()
        return cls(config_maps, secrets)


@dataclass(frozen=True, slots=True)
class PodFacts:
    """What the Downward API tells a replica about itself."""

    name: str
    namespace: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    service_account: str
    uid: str = ""
    ip: str = "127.0.0.1"
    node: str = "localhost"

    def field(self, path: str) -> str | None:
        """The value of a fieldRef's fieldPath, or None when the Downward API has no such field."""
        simple = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": self.node,
            "spec.serviceAccountName": self.service_account,
            "status.hostIP": self.ip,
            "status.hostIPs": self.ip,
            "status.podIP": self.ip,
            "status.podIPs": self.ip,
        }
        if path in simple:
            return simple[path]
        match = LABEL_FIELD.fullmatch(path)
        if match is None:
            return None
        table = self.labels if match.group(1) == "labels" else self.annotations
        return table.get(match.group(2), "")


@dataclass(frozen=True, slots=True)
class Missing:
    """A reference that leads nowhere: the field that makes it and what is missing."""

    path: FieldPath
    message: str


@dataclass(frozen=True, slots=True)
class VolumeFiles:
    """A pod volume as a folder: its files (relative path, bytes, mode); empty for scratch."""

    name: str
    files: tuple[tuple[str, bytes, int], ...] = ()
    scratch: bool = False
    """Cleared when the replica starts (emptyDir); otherwise rewritten (ConfigMap, Secret) or
    kept across restarts (any other kind of volume, e.g. a StatefulSet's claim)."""
    generated: bool = True
    """Written from a ConfigMap or Secret each time the replica starts."""


@dataclass(slots=True)
class ContainerEnv:
    """A container's environment from its env and envFrom, and what could not be found."""

    values: dict[str, str] = field(default_factory=dict)
    missing: list[Missing] = field(default_factory=list)
    unavailable: list[Missing] = field(default_factory=list)
    """Sources a local process cannot have (resourceFieldRef, fileKeyRef)."""


# `$$` is an escaped `$`; `$(NAME)` a reference (Kubernetes: dependent environment variables).
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' rules for `$(NAME)` in env values, command and args: its value when NAME is
    set, as written when it is not; `$$` becomes `$`."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        return env.get(name, match.group(0))

    return _REFERENCE.sub(replace, text) if "$" in text else text


def container_env(
    container: Container,
    namespace: str,
    source: ConfigSource,
    pod: PodFacts | None,
    path: FieldPath,
) -> ContainerEnv:
    """envFrom first, then env over it, as Kubernetes orders them. Without `pod`, Downward API
    fields are left out (validation has no replica to describe)."""
    result = ContainerEnv()
    for index, origin in enumerate(container.env_from):
        where = (*path, "envFrom", index)
        reference, table, kind, key = _whole(origin.config_map_ref, origin.secret_ref, source)
        if reference is None:
            continue
        values = table.get((namespace, reference.name))
        if values is None:
            if not reference.optional:
                result.missing.append(
                    Missing((*where, key, "name"), _no_object(kind, reference.name, namespace))
                )
            continue
        prefix = origin.prefix or ""
        for name, value in values.items():
            if _ENV_NAME.fullmatch(prefix + name):
                result.values[prefix + name] = _text(value)
    for index, variable in enumerate(container.env):
        where = (*path, "env", index)
        if variable.value_from is None:
            # `$(NAME)` names a variable defined before this one (Kubernetes' dependent
            # environment variables); an unknown one stays as written, `$$` is a `$`.
            result.values[variable.name] = expand(variable.value or "", result.values)
            continue
        origin_from = variable.value_from
        if origin_from.config_map_key_ref is not None:
            found = _key(
                origin_from.config_map_key_ref,
                source.config_maps,
                "ConfigMap",
                namespace=namespace,
                where=(*where, "valueFrom", "configMapKeyRef"),
                result=result,
            )
        elif origin_from.secret_key_ref is not None:
            found = _key(
                origin_from.secret_key_ref,
                source.secrets,
                "Secret",
                namespace=namespace,
                where=(*where, "valueFrom", "secretKeyRef"),
                result=result,
            )
        elif origin_from.field_ref is not None:
            found = pod.field(origin_from.field_ref.field_path) if pod is not None else ""
        else:
            name = origin_from.sources()[0] if origin_from.sources() else "valueFrom"
            result.unavailable.append(
                Missing(
                    (*where, "valueFrom", name),
                    f"{name} is not available to a local process; give a value",
                )
            )
            found = None
        if found is not None:
            result.values[variable.name] = found
    return result


def _whole(
    config_map: ObjectReference | None, secret: ObjectReference | None, source: ConfigSource
) -> tuple[ObjectReference | None, Mapping[tuple[str, str], Mapping[str, bytes]], str, str]:
    if config_map is not None:
        return config_map, source.config_maps, "ConfigMap", "configMapRef"
    return secret, source.secrets, "Secret", "secretRef"


def _key(
    selector: KeySelector,
    table: Mapping[tuple[str, str], Mapping[str, bytes]],
    kind: str,
    *,
    namespace: str,
    where: FieldPath,
    result: ContainerEnv,
) -> str | None:
    values = table.get((namespace, selector.name))
    if values is None:
        if not selector.optional:
            result.missing.append(
                Missing((*where, "name"), _no_object(kind, selector.name, namespace))
            )
        return None
    if selector.key not in values:
        if not selector.optional:
            result.missing.append(
                Missing(
                    (*where, "key"), f"{kind} {namespace}/{selector.name} has no key {selector.key}"
                )
            )
        return None
    return _text(values[selector.key])


def pod_volumes(
    pod: PodSpec,
    namespace: str,
    source: ConfigSource,
    path: FieldPath,
    facts: PodFacts | None = None,
) -> tuple[list[VolumeFiles], list[Missing]]:
    """Each volume of the pod as files, and the ConfigMaps, Secrets and keys that are missing.
    Without `facts` (validation), Downward API files are left empty."""
    volumes: list[VolumeFiles] = []
    missing: list[Missing] = []
    for index, volume in enumerate(pod.volumes):
        where = (*path, "volumes", index)
        if isinstance(volume.downward_api, Mapping):
            files = _downward_files(volume.downward_api, facts, DEFAULT_MODE)
            volumes.append(VolumeFiles(volume.name, files))
        elif isinstance(volume.projected, Mapping):
            volumes.append(
                _projected(
                    volume.name,
                    volume.projected,
                    namespace=namespace,
                    source=source,
                    facts=facts,
                    where=where,
                    missing=missing,
                )
            )
        elif volume.config_map is not None:
            volumes.append(
                _files(
                    volume.name,
                    volume.config_map,
                    source.config_maps,
                    kind="ConfigMap",
                    namespace=namespace,
                    where=(*where, "configMap"),
                    missing=missing,
                )
            )
        elif volume.secret is not None:
            volumes.append(
                _files(
                    volume.name,
                    volume.secret,
                    source.secrets,
                    kind="Secret",
                    namespace=namespace,
                    where=(*where, "secret"),
                    missing=missing,
                )
            )
        else:
            volumes.append(
                VolumeFiles(volume.name, scratch=volume.empty_dir is not None, generated=False)
            )
    return volumes, missing


def _files(
    name: str,
    origin: ConfigMapVolumeSource | SecretVolumeSource,
    table: Mapping[tuple[str, str], Mapping[str, bytes]],
    *,
    kind: str,
    namespace: str,
    where: FieldPath,
    missing: list[Missing],
) -> VolumeFiles:
    object_name = origin.name if isinstance(origin, ConfigMapVolumeSource) else origin.secret_name
    name_field = "name" if isinstance(origin, ConfigMapVolumeSource) else "secretName"
    mode = DEFAULT_MODE if origin.default_mode is None else origin.default_mode
    values = table.get((namespace, object_name))
    if values is None:
        if not origin.optional:
            missing.append(Missing((*where, name_field), _no_object(kind, object_name, namespace)))
        return VolumeFiles(name)
    items: Iterator[tuple[int, KeyToPath]] = enumerate(origin.items)
    if not origin.items:
        return VolumeFiles(name, tuple((key, value, mode) for key, value in sorted(values.items())))
    files = []
    for position, item in items:
        if item.key not in values:
            if not origin.optional:
                missing.append(
                    Missing(
                        (*where, "items", position, "key"),
                        f"{kind} {namespace}/{object_name} has no key {item.key}",
                    )
                )
            continue
        files.append((item.path, values[item.key], mode if item.mode is None else item.mode))
    return VolumeFiles(name, tuple(files))


def _downward_files(
    spec: Mapping[str, Any], facts: PodFacts | None, default_mode: int
) -> tuple[tuple[str, bytes, int], ...]:
    """A downwardAPI volume's items: a fieldRef's value per file; `metadata.labels` and
    `metadata.annotations` whole, one `key="value"` line each, as the kubelet writes them."""
    mode = spec.get("defaultMode", default_mode)
    files = []
    for item in spec.get("items") or []:
        if not isinstance(item, Mapping) or not item.get("path"):
            continue
        field_path = (item.get("fieldRef") or {}).get("fieldPath")
        if not isinstance(field_path, str):
            continue  # resourceFieldRef: a local process has no resource limits
        text = ""
        if facts is not None:
            if field_path in ("metadata.labels", "metadata.annotations"):
                table = facts.labels if field_path == "metadata.labels" else facts.annotations
                text = "".join(f'{key}="{value}"\n' for key, value in sorted(table.items()))
            else:
                text = facts.field(field_path) or ""
        files.append((str(item["path"]), text.encode(), int(item.get("mode", mode))))
    return tuple(files)


def _projected(
    name: str,
    spec: Mapping[str, Any],
    *,
    namespace: str,
    source: ConfigSource,
    facts: PodFacts | None,
    where: FieldPath,
    missing: list[Missing],
) -> VolumeFiles:
    """A projected volume: its ConfigMap, Secret and Downward API sources in one folder
    (serviceAccountToken and clusterTrustBundle sources write nothing: there is no cluster)."""
    mode = int(spec.get("defaultMode", DEFAULT_MODE))
    files: list[tuple[str, bytes, int]] = []
    for position, projection in enumerate(spec.get("sources") or []):
        if not isinstance(projection, Mapping):
            continue
        at = (*where, "projected", "sources", position)
        if isinstance(projection.get("configMap"), Mapping):
            origin: ConfigMapVolumeSource | SecretVolumeSource = (
                ConfigMapVolumeSource.model_validate(
                    {**projection["configMap"], "defaultMode": mode}
                )
            )
            table, kind, key = source.config_maps, "ConfigMap", "configMap"
        elif isinstance(projection.get("secret"), Mapping):
            secret = dict(projection["secret"])
            secret["secretName"] = secret.pop("name", "")
            origin = SecretVolumeSource.model_validate({**secret, "defaultMode": mode})
            table, kind, key = source.secrets, "Secret", "secret"
        elif isinstance(projection.get("downwardAPI"), Mapping):
            files.extend(_downward_files(projection["downwardAPI"], facts, mode))
            continue
        else:
            continue
        found: list[Missing] = []
        part = _files(
            name, origin, table, kind=kind, namespace=namespace, where=(*at, key), missing=found
        )
        # A projection names its object by `name` (a Secret volume by `secretName`).
        missing.extend(
            Missing(tuple("name" if p == "secretName" else p for p in m.path), m.message)
            for m in found
        )
        files.extend(part.files)
    return VolumeFiles(name, tuple(files))


def mount_variable(mount_path: str) -> str:
    """The variable that tells a process where its mountPath is: `/etc/app-config` ->
    `GOSSAMER_MOUNT_ETC_APP_CONFIG`."""
    words = re.sub(r"[^A-Za-z0-9]+", "_", mount_path).strip("_").upper()
    return f"GOSSAMER_MOUNT_{words or 'ROOT'}"


def _no_object(kind: str, name: str, namespace: str) -> str:
    return (
        f"no {kind} named {name} in namespace {namespace} (set optional: true if it may be absent)"
    )


def _text(value: bytes) -> str:
    # Bytes that are not UTF-8 survive the trip into the environment (os.environ encodes back).
    return value.decode("utf-8", "surrogateescape")
