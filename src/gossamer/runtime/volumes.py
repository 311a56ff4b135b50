"""A replica's volumes as folders under the mesh's state, and the variables naming its mounts.

Each volume of a replica is `STATE/volumes/NAMESPACE/POD/VOLUME`. ConfigMap and Secret volumes are
written afresh each time the replica starts (one file per key, with the volume's modes);
emptyDir starts empty; any other volume (a StatefulSet's claim, a persistentVolumeClaim,
hostPath, ...) is a folder kept across restarts. A process cannot see a folder at its
container's mountPath (that would need root and a mount namespace), so it is told where each
mount is: `/etc/app-config` becomes `GOSSAMER_MOUNT_ETC_APP_CONFIG=<folder>`, with subPath added.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from gossamer.resources.podconfig import mount_variable
from gossamer.runtime.plan import PlanError, Replica


def volume_folder(root: Path, replica: Replica, volume: str) -> Path:
    """Where one volume of a replica lives."""
    return root / replica.namespace / replica.pod / volume


def materialize(replica: Replica, root: Path) -> dict[str, str]:
    """Write the replica's volumes under `root`; the variables that name its mounts."""
    for volume in replica.volumes:
        folder = volume_folder(root, replica, volume.name)
        if volume.generated or volume.scratch:
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        for relative, content, mode in volume.files:
            target = (folder / relative).resolve()
            if not target.is_relative_to(folder.resolve()):
                raise PlanError(f"{replica.name}: volume {volume.name}: {relative} leaves it")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            target.chmod(mode)
    known = {volume.name for volume in replica.volumes}
    env: dict[str, str] = {}
    for mount in replica.mounts:
        folder = volume_folder(root, replica, mount.volume)
        if mount.volume not in known:
            # A claim template's volume: not in the pod's volumes, kept like a claim.
            folder.mkdir(parents=True, exist_ok=True)
        env[mount_variable(mount.mount_path)] = str(
            folder / mount.sub_path if mount.sub_path else folder
        )
    return env
