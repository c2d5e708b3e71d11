"""The access audit: an admin's download from raw is recorded, a viewer's is
refused and recorded too; records hold user, time, action and internal IDs,
never an identifier; nothing queued is lost when the writer stops; old records
go after the retention."""

from __future__ import annotations

import dataclasses
import datetime

import pytest
import requests

from orthanc_plugins.common.access import AuditRecord, AuditWriter, purge_audit
from pixl_stack import studygen
from tui import cli


def audit_lines(capsys, *arguments: str) -> list[list[str]]:
    assert cli.main(["audit", *arguments]) == 0
    return [line.split("\t") for line in capsys.readouterr().out.splitlines()]


@pytest.mark.stack
def test_an_admins_raw_download_is_recorded_and_a_viewers_refused(
    stack, credentials, raw_study, capsys,
):
    raw = stack.settings.raw.url
    archive = f"{raw}/studies/{raw_study.orthanc_id}/archive"
    assert requests.get(archive, auth=credentials.admin, timeout=60).status_code == 200
    assert requests.get(archive, auth=credentials.viewer, timeout=60).status_code == 403

    admin_rows = audit_lines(capsys, "--user", credentials.admin[0], "--action", "archive")
    at, node, user, role, outcome, action, resource = admin_rows[0]
    assert (node, user, role, outcome) == ("raw", credentials.admin[0], "admin", "allowed")
    assert (action, resource) == ("GET /studies/{id}/archive", f"{raw_study.orthanc_id}/archive")
    recorded = datetime.datetime.fromisoformat(at)
    assert abs(datetime.datetime.now(datetime.UTC) - recorded) < datetime.timedelta(minutes=5)

    refused = audit_lines(capsys, "--user", credentials.viewer[0], "--refused")
    assert refused[0][1:] == ["raw", credentials.viewer[0], "viewer", "REFUSED",
                              "GET /studies/{id}/archive", f"{raw_study.orthanc_id}/archive"]

    # No identifier of the study (MRN, name, accession, UIDs) in any record.
    everything = capsys.readouterr().out + "\n".join("\t".join(r) for r in audit_lines(capsys, "--limit", "10000"))
    study = raw_study.study
    for value in {*studygen.identifying_values(study.patient, study.accession), study.study_uid}:
        assert value not in everything


@pytest.mark.stack
def test_changes_of_controls_are_recorded_and_the_audit_is_for_admins_only(stack, credentials, capsys):
    raw = stack.settings.raw.url
    paused = requests.get(raw + "/pixl/controls", auth=credentials.operator, timeout=10).json()["paused"]
    changed = requests.put(raw + "/pixl/controls", json={"paused": paused}, auth=credentials.operator, timeout=10)
    assert changed.status_code == 200

    rows = audit_lines(capsys, "--user", credentials.operator[0], "--action", "controls")
    assert rows[0][2:] == [credentials.operator[0], "operator", "allowed", "PUT /pixl/controls", "controls"]
    assert requests.get(raw + "/pixl/audit", auth=credentials.operator, timeout=10).status_code == 403


def test_stopping_the_writer_writes_everything_queued(pixl_settings, db):
    writer = AuditWriter(pixl_settings)
    writer.start()
    now = datetime.datetime.now(datetime.UTC)
    for number in range(1200):  # more than one batch
        writer.record(AuditRecord(now, "raw", "someone", "admin", "GET /studies/{id}", f"s{number}", True))
    writer.stop()
    assert db.execute("SELECT count(*), count(DISTINCT resource) FROM access_audit").fetchone() == (1200, 1200)


def test_records_older_than_the_retention_are_purged(pixl_settings, db):
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=40)
    for at, resource in ((old, "old"), (datetime.datetime.now(datetime.UTC), "new")):
        db.execute("INSERT INTO access_audit (at, node, username, role, action, resource, allowed)"
                   " VALUES (%s, 'raw', 'u', 'admin', 'GET /x', %s, true)", (at, resource))
    db.commit()

    assert purge_audit(dataclasses.replace(pixl_settings, audit_retention_days=0)) == 0
    assert purge_audit(dataclasses.replace(pixl_settings, audit_retention_days=30)) == 1
    assert [r[0] for r in db.execute("SELECT resource FROM access_audit").fetchall()] == ["new"]


@pytest.mark.stack
def test_the_service_users_study_reads_are_recorded_its_instance_reads_not(
    stack, credentials, raw_study, capsys,
):
    raw = stack.settings.raw.url
    for path in (f"/studies/{raw_study.orthanc_id}/series", f"/instances/{raw_study.instance_id}/file"):
        assert requests.get(raw + path, auth=credentials.service, timeout=30).status_code == 200

    rows = audit_lines(capsys, "--user", credentials.service[0], "--limit", "10000")
    allowed = {(row[5], row[6]) for row in rows if row[4] == "allowed"}
    assert ("GET /studies/{id}/series", f"{raw_study.orthanc_id}/series") in allowed
    assert ("GET /instances/{id}/file", f"{raw_study.instance_id}/file") not in allowed
