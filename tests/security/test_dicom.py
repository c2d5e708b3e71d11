"""DICOM: anon accepts associations from raw only, raw from the archives only;
DICOM TLS between raw and a TLS-enabled development VNA, checked with dcmtk."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from orthanc_plugins.common.orthanc_api import HttpOrthanc, find_study, post_json
from orthanc_plugins.common.settings import OrthancNode
from pixl_stack import studygen
from pixl_stack.certs import DevelopmentPki
from pixl_stack.stack import Stack

pytestmark = pytest.mark.stack


def dcmtk(tool: str, node: OrthancNode, calling_aet: str, *arguments: str,
          tls: tuple[Path, Path, Path] | None = None, files: tuple[Path, ...] = ()) -> subprocess.CompletedProcess:
    """Run a dcmtk tool against `node`; `tls`: (client key, client certificate, CA)."""
    tls_arguments = ["+tls", str(tls[0]), str(tls[1]), "+cf", str(tls[2])] if tls else []
    return subprocess.run(
        [tool, *tls_arguments, "-aet", calling_aet, "-aec", node.aet, *arguments,
         node.host, str(node.dicom_port), *map(str, files)],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, TCP_NODELAY="1"), check=False,
    )


def test_anon_accepts_associations_from_raw_only(stack):
    anon = stack.settings.anon
    assert dcmtk("echoscu", anon, stack.settings.raw.aet).returncode == 0
    refused = dcmtk("echoscu", anon, "INTRUDER")
    assert refused.returncode != 0 and "Association Rejected" in refused.stderr + refused.stdout


def test_raw_accepts_associations_from_its_archives_only(stack):
    raw = stack.settings.raw
    assert dcmtk("echoscu", raw, stack.settings.vna.aet).returncode == 0
    assert dcmtk("echoscu", raw, "INTRUDER").returncode != 0


@pytest.fixture
def dicom_tls_stack(base_settings, extra_stack_settings):
    """A second stack whose VNA and raw speak DICOM TLS only (mutual, the stack's CA)."""
    state = base_settings.state_dir / "dicom-tls-stack"
    settings = extra_stack_settings(base_settings, 1, state, dicom_tls=True)
    stack = Stack(settings)
    try:
        stack.up()
        yield settings
    finally:
        stack.down()


def test_dicom_tls_between_raw_and_the_archive(dicom_tls_stack, tmp_path):
    settings = dicom_tls_stack
    pki = DevelopmentPki(settings.tls_ca_bundle.parent)
    key, certificate = tmp_path / "client-key.pem", tmp_path / "client.pem"
    pki.issue(certificate, key, ("dcmtk-client",))
    tls = (key, certificate, pki.ca_certificate)
    vna, raw_aet = settings.vna, settings.raw.aet

    assert dcmtk("echoscu", vna, "PIXLTEST", tls=tls).returncode == 0
    assert dcmtk("echoscu", vna, "PIXLTEST").returncode != 0  # plain DICOM is not spoken
    untrusted = DevelopmentPki(tmp_path / "other-ca").ensure()
    refused = dcmtk("echoscu", vna, "PIXLTEST", tls=(untrusted.server_key, untrusted.server_certificate,
                                                       pki.ca_certificate))
    assert refused.returncode != 0  # a client certificate of another CA

    spec = studygen.StudySpec(modality="CT", series=1, instances_per_series=2, seed=1601)
    study = studygen.write_generated_study(spec, studygen.make_patient(spec.seed), tmp_path / "study")
    stored = dcmtk("storescu", vna, "PIXLTEST", tls=tls, files=tuple(study.files))
    assert stored.returncode == 0, stored.stderr
    found = dcmtk("findscu", vna, raw_aet, "-S", "-k", "QueryRetrieveLevel=STUDY",
                  "-k", f"StudyInstanceUID={study.study_uid}", tls=tls)
    assert found.returncode == 0 and study.study_uid in found.stdout + found.stderr

    # raw as a DICOM TLS client (C-ECHO, C-MOVE) and server (the archive's C-STOREs).
    raw = HttpOrthanc(settings.raw.url, settings.orthanc_auth)
    raw.post("/modalities/vna/echo", b"{}")
    post_json(raw, "/modalities/vna/move", {
        "Level": "Study", "Resources": [{"StudyInstanceUID": study.study_uid}], "TargetAet": raw_aet,
    })
    assert find_study(raw, study.study_uid) is not None
