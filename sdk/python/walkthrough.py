"""The README's walk-through, driven through the Python client generated from openapi/openapi.json.

Needs SVALBARD_URL, SVALBARD_PLATFORM_TOKEN (a platform administrator's token), SVALBARD_BIN (the
`svalbard` binary, to mint a viewer token with the server's secret) and SVALBARD_SOURCE_DATABASE
(a PostgreSQL database on 127.0.0.1:5432 that user postgres may dump). scripts/contract.sh sets
them all.
"""

import os
import subprocess
import sys
import tempfile
import time
import uuid

import httpx

from svalbard_client import AuthenticatedClient
from svalbard_client.api.backups import archive, create_backup, delete_backup, get_backup, update_backup
from svalbard_client.api.keys import export_keys
from svalbard_client.api.planets import create_planet
from svalbard_client.api.projects import create_project
from svalbard_client.api.restores import get_restore, restore_backup
from svalbard_client.api.schedules import preview_retention, put_schedule
from svalbard_client.api.tenants import create_tenant
from svalbard_client.models import (
    ArchiveLink,
    Backup,
    BackupStatus,
    ConnectionInput,
    CreateBackup,
    CreatePlanet,
    CreateProject,
    CreateRestore,
    CreateTenant,
    Engine,
    KeyExport,
    Metadata,
    Planet,
    PlanetClass,
    Preview,
    Problem,
    Project,
    PutSchedule,
    Restore,
    RestoreStatus,
    RetentionPolicy,
    Schedule,
    SslMode,
    Tenant,
    UpdateBackup,
)

STEPS = []


def step(name):
    STEPS.append(name)
    print(f"  ok  {name}", flush=True)


def expect(response, status, kind):
    assert response.status_code == status, f"{response.status_code}: {response.content!r}"
    assert isinstance(response.parsed, kind), f"{type(response.parsed)}: {response.content!r}"
    return response.parsed


def main():
    url = os.environ["SVALBARD_URL"]
    source = os.environ["SVALBARD_SOURCE_DATABASE"]
    platform = AuthenticatedClient(
        base_url=url, token=os.environ["SVALBARD_PLATFORM_TOKEN"], raise_on_unexpected_status=True
    )
    suffix = uuid.uuid4().hex[:8]

    tenant = expect(create_tenant.sync_detailed(client=platform, body=CreateTenant(name=f"py-{suffix}")), 201, Tenant)
    step(f"tenant {tenant.name}")
    project = expect(
        create_project.sync_detailed(
            tenant.id, client=platform, body=CreateProject(name="shop"), idempotency_key=f"py-{suffix}"
        ),
        201,
        Project,
    )
    step(f"project {project.name}")
    connection = ConnectionInput(host="127.0.0.1", port=5432, database=source, user="postgres", sslmode=SslMode.DISABLE)
    planet = expect(
        create_planet.sync_detailed(
            tenant.id,
            project.id,
            client=platform,
            body=CreatePlanet(name="orders", engine=Engine.POSTGRESQL, planet_class=PlanetClass.TEST, connection=connection),
        ),
        201,
        Planet,
    )
    assert planet.engine == Engine.POSTGRESQL and planet.connection.sslmode == SslMode.DISABLE
    step(f"planet {planet.name} ({planet.engine.value})")

    backup = expect(
        create_backup.sync_detailed(
            tenant.id,
            project.id,
            planet.id,
            client=platform,
            body=CreateBackup(retention_period_in_days=10, metadata=Metadata(name="python walk-through")),
        ),
        201,
        Backup,
    )
    assert backup.status in (BackupStatus.SCHEDULED, BackupStatus.RUNNING, BackupStatus.SUCCEEDED), backup.status
    step(f"backup {backup.id} {backup.status.value}")
    deadline = time.monotonic() + 120
    while backup.status in (BackupStatus.SCHEDULED, BackupStatus.RUNNING):
        assert time.monotonic() < deadline, "the backup did not finish in time"
        time.sleep(0.3)
        backup = expect(get_backup.sync_detailed(tenant.id, project.id, backup.id, client=platform), 200, Backup)
    assert backup.status == BackupStatus.SUCCEEDED, f"{backup.status}: {backup.error_message}"
    step(f"backup succeeded: {backup.size_bytes} bytes, {backup.checksum}")

    assert backup.encryption == "age", backup.encryption
    link = expect(archive.sync_detailed(tenant.id, project.id, backup.id, client=platform), 200, ArchiveLink)
    keys = expect(export_keys.sync_detailed(tenant.id, client=platform), 200, KeyExport)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "backup.svb.zst.age")
        key = os.path.join(tmp, "tenant.key")
        with open(key, "w") as f:
            f.write(keys.identity_file)
        with httpx.stream("GET", link.download_url) as r:
            assert r.status_code == 200, r.status_code
            with open(path, "wb") as f:
                for chunk in r.iter_bytes():
                    f.write(chunk)
        assert os.path.getsize(path) == backup.size_bytes
        plain = os.path.join(tmp, "backup.svb.zst")
        subprocess.run(["age", "-d", "-i", key, "-o", plain, path], check=True)
        subprocess.run(["zstd", "-q", "-t", plain], check=True)
    step("archive downloaded through the pre-signed URL; age -d with the exported key, then zstd -t, pass")

    target = f"{source}_py_{suffix}"
    restore = expect(
        restore_backup.sync_detailed(
            tenant.id, project.id, backup.id, client=platform, body=CreateRestore(target_database=target)
        ),
        202,
        Restore,
    )
    deadline = time.monotonic() + 120
    while restore.status in (RestoreStatus.SCHEDULED, RestoreStatus.RUNNING):
        assert time.monotonic() < deadline, "the restore did not finish in time"
        time.sleep(0.3)
        restore = expect(get_restore.sync_detailed(tenant.id, project.id, restore.id, client=platform), 200, Restore)
    assert restore.status == RestoreStatus.SUCCEEDED, f"{restore.status}: {restore.error_message}"
    assert restore.verification is not None and restore.verification.tables >= 1, restore.verification
    step(f"restored into {target}: {restore.verification.tables} tables, {restore.verification.rows} rows")

    schedule = expect(
        put_schedule.sync_detailed(
            tenant.id,
            project.id,
            planet.id,
            client=platform,
            body=PutSchedule(
                cron="30 2 * * *", timezone="Europe/Berlin", retention=RetentionPolicy(keep_daily=7, keep_weekly=4)
            ),
        ),
        201,
        Schedule,
    )
    step(f"schedule {schedule.cron} {schedule.timezone}, next run {schedule.next_run_at}")
    preview = expect(preview_retention.sync_detailed(tenant.id, project.id, planet.id, client=platform), 200, Preview)
    assert any(v.backup_id == backup.id for v in preview.keep), preview
    step(f"retention preview: keeps {len(preview.keep)}, deletes {len(preview.delete)}")
    pinned = expect(
        update_backup.sync_detailed(tenant.id, project.id, backup.id, client=platform, body=UpdateBackup(pinned=True)),
        200,
        Backup,
    )
    assert pinned.pinned is True
    step("backup pinned")
    deleted = expect(delete_backup.sync_detailed(tenant.id, project.id, backup.id, client=platform), 202, Backup)
    assert deleted.status in (BackupStatus.DELETING, BackupStatus.DELETED), deleted.status
    step(f"backup {deleted.status.value}")

    bad = expect(create_project.sync_detailed(tenant.id, client=platform, body=CreateProject(name="Not Valid")), 400, Problem)
    assert bad.status == 400 and any(e.field == "name" for e in bad.errors), bad
    step(f"bad body: {bad.title} naming `name`")
    missing = expect(get_backup.sync_detailed(tenant.id, project.id, uuid.uuid4(), client=platform), 404, Problem)
    step(f"missing id: {missing.title}")
    token = subprocess.run(
        [os.environ["SVALBARD_BIN"], "token", "--tenant", str(tenant.id), "--role", "viewer", "--ttl", "10m"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    viewer = AuthenticatedClient(base_url=url, token=token, raise_on_unexpected_status=True)
    weak = expect(create_backup.sync_detailed(tenant.id, project.id, planet.id, client=viewer, body=CreateBackup()), 403, Problem)
    step(f"wrong role: {weak.title}")
    print(f"python walk-through: all {len(STEPS)} steps ok")


if __name__ == "__main__":
    try:
        main()
    except Exception:
        print(f"python walk-through: failed after {len(STEPS)} steps", file=sys.stderr)
        raise
