"""Helpers of the destination tests: real servers on free ports, de-identified studies."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from orthanc_plugins.common.secrets import FileSecrets
from pixl_hooks.types import ExportableStudy, zip_dicom_files
from pixl_stack.ftps_server import UploadRecord, read_upload_log
from pixl_stack.studygen import StudySpec, generate_study, identifying_values, make_patient

FTPS_USER = "pixl-ftp"
FTPS_PASSWORD = "ftps-test-password-1"

# Attributes a de-identified copy keeps besides the pseudonyms: enough for a valid image.
_KEPT_ATTRIBUTES = (
    "SOPClassUID", "Modality", "SeriesNumber", "InstanceNumber", "SamplesPerPixel",
    "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "PixelData",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


EXAMPLE_PACKAGE = Path(__file__).parent / "destinations" / "example_destination"


def install_example_package(folder: Path) -> Path:
    """pip-install the example plugin package into `folder/site` (as a site would install
    theirs); the folder to put on sys.path or PYTHONPATH."""
    source = shutil.copytree(EXAMPLE_PACKAGE, folder / "example-src")  # builds write in-tree
    target = folder / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(target), str(source)],
        check=True, capture_output=True,
    )
    return target


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before listening")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on port {port} within {timeout}s")


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    certfile: Path
    keyfile: Path

    @property
    def pem(self) -> str:
        return self.certfile.read_text()


@dataclasses.dataclass
class FtpsServer:
    port: int
    root: Path
    process: subprocess.Popen
    host: str = "127.0.0.1"

    @property
    def upload_log(self) -> Path:
        return self.root.parent / "uploads.log"

    def uploads(self) -> list[UploadRecord]:
        """What the server says it received (`--upload-log`), oldest first."""
        return read_upload_log(self.upload_log)


def start_ftps_server(
    folder: Path, tls: TlsFiles, port: int | None = None, mode: str = "implicit"
) -> FtpsServer:
    """`python -m pixl_stack.ftps_server` as the stack launches it, in its own session."""
    port = port or free_port()
    root = folder / "ftps-root"
    folder.mkdir(parents=True, exist_ok=True)
    password_file = folder / "ftps-password"
    password_file.write_text(FTPS_PASSWORD + "\n")
    log = (folder / "ftps.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "pixl_stack.ftps_server", "--host", "127.0.0.1",
         "--port", str(port), "--root", str(root), "--user", FTPS_USER,
         "--password-file", str(password_file), "--certfile", str(tls.certfile),
         "--keyfile", str(tls.keyfile), "--tls", mode, "--upload-log", str(folder / "uploads.log")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_for_port(port, process)
    except RuntimeError:
        stop_process(process)
        raise
    return FtpsServer(port=port, root=root, process=process)


def set_ftps_secrets(secrets: FileSecrets, alias: str, server: FtpsServer, tls: TlsFiles) -> None:
    for field, value in {
        "host": server.host, "port": str(server.port), "username": FTPS_USER,
        "password": FTPS_PASSWORD, "ca-cert": tls.pem,
    }.items():
        secrets.set(f"{alias}--ftp--{field}", value)


@dataclasses.dataclass(frozen=True)
class DeidentifiedStudy:
    study: ExportableStudy
    files: list[Path]
    identifying: set[str]  # values of the original study that must never arrive

    @property
    def sop_instance_uids(self) -> set[str]:
        return {self.sop_uid(path) for path in self.files}

    @staticmethod
    def sop_uid(path: Path) -> str:
        return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _pseudo_uid(*parts: object) -> str:
    digest = int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:30], 16)
    return f"2.25.{digest}"


def make_deidentified_study(
    folder: Path, seed: int = 1, modality: str = "DX", series: int = 2, instances: int = 2
) -> DeidentifiedStudy:
    """A generated (identifiable) study copied with only pseudonyms and image attributes,
    as orthanc-anon would hand it to a destination; written under `folder`."""
    patient = make_patient(seed)
    spec = StudySpec(modality=modality, series=series, instances_per_series=instances, seed=seed)
    originals = generate_study(spec, patient)
    pseudo_patient = hashlib.sha256(f"patient-{seed}".encode()).hexdigest()[:32]
    pseudo_study = _pseudo_uid("study", seed)
    out = folder / f"deid-{seed}"
    out.mkdir(parents=True)
    files = []
    for original in originals:
        copy = Dataset()
        for keyword in _KEPT_ATTRIBUTES:
            if keyword in original:
                setattr(copy, keyword, original.data_element(keyword).value)
        copy.PatientID = pseudo_patient
        copy.PatientName = pseudo_patient
        copy.StudyInstanceUID = pseudo_study
        copy.SeriesInstanceUID = _pseudo_uid("series", seed, original.SeriesInstanceUID)
        copy.SOPInstanceUID = _pseudo_uid("instance", seed, original.SOPInstanceUID)
        copy.file_meta = FileMetaDataset()
        copy.file_meta.MediaStorageSOPClassUID = copy.SOPClassUID
        copy.file_meta.MediaStorageSOPInstanceUID = copy.SOPInstanceUID
        copy.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        copy.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        path = out / f"{int(copy.SeriesNumber):03d}-{int(copy.InstanceNumber):04d}.dcm"
        copy.save_as(path, enforce_file_format=True)
        files.append(path)
    zip_path = zip_dicom_files(files, folder / f"study-{seed}.zip")
    study = ExportableStudy(pseudo_patient, pseudo_study, zip_path)
    return DeidentifiedStudy(study, files, identifying_values(patient, originals[0].AccessionNumber))


def assert_no_identifying_values(data: bytes, identifying: set[str]) -> None:
    """No identifying value of the original study appears in bytes that reached a destination.

    The birth date (8 digits) can occur inside numeric UIDs, so only values
    with a non-digit are looked for in raw bytes.
    """
    leaked = [value for value in identifying if not value.isdigit() and value.encode() in data]
    assert not leaked, f"{len(leaked)} identifying values arrived at the destination"
