"""The Orthanc web UI is useful for inspection: a JPEG 2000 study, de-identified by the
pipeline, shows in anon's Web Viewer (orthanc-webviewer) and in Orthanc Explorer's
previews (decoded by orthanc-gdcm), as headless Chromium renders them."""

from __future__ import annotations

import io
import itertools
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless

from orthanc_plugins.common import db as pixl_db
from orthanc_plugins.common.http_session import idle_limited_session
from orthanc_plugins.common.orthanc_api import find_study, get_json
from pixl_stack import studygen
from stack_support import LoopbackServer, RelayHandler

pytestmark = pytest.mark.stack

PROJECT = "test-extract-uclh-omop-cdm"  # DX, manufacturers ^carestream..., sent to the stack's FTPS
SCREENSHOT_SIZE = (1280, 900)
_seeds = itertools.count(7_770_000 + os.getpid() % 10_000 * 10)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's headless Chromium, installed where missing (the test needs a real browser)."""
    if shutil.which("chromium") is None:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env, timeout=600)
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
                       check=True, env=env, timeout=1200)
    return shutil.which("chromium") or pytest.fail("chromium did not install")


def as_jpeg2000(ds: pydicom.Dataset) -> pydicom.Dataset:
    """The instance with its pixels as 8-bit JPEG 2000 (lossless), a syntax Orthanc's core
    cannot decode by itself."""
    pixels = ds.pixel_array.astype(np.float64)
    grey = ((pixels - pixels.min()) * 255 / max(float(np.ptp(pixels)), 1.0)).astype(np.uint8)
    codestream = io.BytesIO()
    Image.fromarray(grey, mode="L").save(codestream, format="JPEG2000", no_jp2=True,
                                         irreversible=False)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    for scaling in ("RescaleIntercept", "RescaleSlope"):
        if scaling in ds:
            delattr(ds, scaling)
    ds.WindowCenter, ds.WindowWidth = 128, 256  # the whole 8-bit range: the phantom's noise shows
    ds.PixelData = encapsulate([codestream.getvalue()])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless  # explicit VR little endian, as before
    return ds


@pytest.fixture(scope="module")
def deidentified_study(stack, tmp_path_factory) -> dict:
    """A JPEG 2000 DX study, through the whole pipeline: VNA, raw, anon, exported."""
    seed = next(_seeds)
    patient = studygen.make_patient(seed)
    datasets = [as_jpeg2000(ds) for ds in studygen.generate_study(
        studygen.StudySpec(modality="DX", series=1, instances_per_series=1, seed=seed, rows=256,
                           columns=256, manufacturer="Carestream Health"), patient)]
    folder = tmp_path_factory.mktemp("viewer-study")
    for path in studygen.write_study(datasets, folder):  # REST: storescu won't send JPEG 2000
        stack.vna.post("/instances", path.read_bytes())
    source = datasets[0]
    cohort = ("procedure_id,mrn,accession_number,project_name,extract_generated_timestamp,"
              f"study_date,study_uid\n1,{source.PatientID},{source.AccessionNumber},{PROJECT},"
              f"2032-01-01T{seed % 24:02d}:{seed // 24 % 60:02d}:00Z,2020-01-01,"
              f"{source.StudyInstanceUID}\n")
    response = requests.post(stack.settings.raw.url + "/pixl/extracts", data=cohort.encode(),
                             params={"filename": "viewer.csv"}, headers={"Content-Type": "text/csv"},
                             auth=stack.settings.orthanc_auth, timeout=60)
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 180
    with pixl_db.connect(stack.settings, autocommit=True) as conn:
        while True:
            state, pseudo_uid, error = conn.execute(
                "SELECT state, pseudo_study_uid, last_error FROM study_jobs WHERE project_slug = %s"
                " AND study_uid = %s", (PROJECT, source.StudyInstanceUID)).fetchone()
            if state in ("exported", "failed", "skipped", "not_found"):
                break
            assert time.monotonic() < deadline, f"the study is still {state}"
            time.sleep(0.5)
    assert state == "exported", error
    study_id = find_study(stack.anon, pseudo_uid)
    assert study_id is not None
    (series_id,) = get_json(stack.anon, f"/studies/{study_id}")["Series"]
    (instance_id,) = get_json(stack.anon, f"/series/{series_id}")["Instances"]
    return {"source": source, "series": series_id, "instance": instance_id}


def browse(chromium: str, url: str, *args: str) -> subprocess.CompletedProcess:
    """Load `url` in a fresh headless Chromium; its scripts get 15 s of virtual time."""
    profile = Path(os.environ["PIXL_STATE_DIR"]) / "chromium-profile"
    return subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={profile}", "--virtual-time-budget=15000",
         f"--window-size={SCREENSHOT_SIZE[0]},{SCREENSHOT_SIZE[1]}", *args, url],
        capture_output=True, text=True, timeout=180, check=False,
    )


def signed_in_browser_proxy(target: str, auth: tuple[str, str]) -> LoopbackServer:
    """What a person's browser does once signed in: every request carries the user's
    credentials (a headless Chromium never answers the login prompt). Plain HTTP on
    loopback to Chromium, HTTPS verified with the stack's CA to anon."""
    session = idle_limited_session()
    session.auth = auth

    class Handler(RelayHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            self.relay(session.get(target + self.path, timeout=60))

    return LoopbackServer(Handler)


def test_anon_decodes_the_jpeg2000_study_for_the_explorer_preview(stack, deidentified_study):
    instance = deidentified_study["instance"]
    tags = get_json(stack.anon, f"/instances/{instance}/metadata?expand")
    assert tags["TransferSyntax"] == JPEG2000Lossless  # kept as it came: only GDCM decodes it
    preview = requests.get(f"{stack.settings.anon.url}/instances/{instance}/preview",
                           auth=stack.settings.orthanc_auth, timeout=30)
    assert preview.status_code == 200, preview.text
    image = np.asarray(Image.open(io.BytesIO(preview.content)).convert("L"))
    assert image.shape[0] > 32 and len(np.unique(image)) > 16  # an image, not a blank


def test_the_web_viewer_shows_the_deidentified_study(stack, deidentified_study, chromium):
    series = deidentified_study["series"]
    with signed_in_browser_proxy(stack.settings.anon.url, stack.settings.orthanc_auth) as signed_in:
        url = f"{signed_in.url}/web-viewer/app/viewer.html?series={series}"
        page = browse(chromium, url, "--dump-dom")
        screenshot = Path(os.environ["PIXL_STATE_DIR"]) / "web-viewer.png"
        shot = browse(chromium, url, f"--screenshot={screenshot}")
    assert page.returncode == 0, page.stderr[-2000:]
    assert "<canvas" in page.stdout  # the viewer's image canvas, built by its scripts
    source = deidentified_study["source"]
    for identifying in (str(source.PatientName), source.PatientID, source.AccessionNumber):
        assert identifying not in page.stdout

    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    pixels = np.asarray(Image.open(screenshot).convert("L"))
    assert pixels.shape == (SCREENSHOT_SIZE[1], SCREENSHOT_SIZE[0])
    # The viewer fits the image to its viewport, so the middle of the page is the middle of
    # the phantom's disc: noise of many shades of grey, not a blank or a saturated canvas.
    height, width = pixels.shape
    middle = pixels[2 * height // 5: 3 * height // 5, 2 * width // 5: 3 * width // 5]
    assert len(np.unique(middle)) > 32 and middle.std() > 5, "no image rendered in the viewer"
    if os.environ.get("PIXL_SCREENSHOT_DIR"):  # for a person to look at: the state dir goes
        shutil.copy(screenshot, Path(os.environ["PIXL_SCREENSHOT_DIR"]) / screenshot.name)
