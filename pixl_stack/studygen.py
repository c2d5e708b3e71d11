"""Realistic, deterministic DICOM studies for tests, the demo and benchmarks.

A generated study looks like what a hospital archive sends: several series of
several instances, small pixel data, and patient-identifying values in every
place a real study hides them (patient module, free-text descriptions, staff
names, private tags, nested request sequences, other-ID sequences). Everything
is derived from seeds, so the same call always writes the same bytes, and
`identifying_values` lists what de-identification must remove.

Values are fictional: telephone numbers come from Ofcom's drama ranges and
NHS numbers from the 999 test range.
"""

from __future__ import annotations

import copy
import datetime
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
)

MODALITIES = ("CT", "MR", "CR", "DX", "US")

SOP_CLASS_BY_MODALITY = {
    "CT": CTImageStorage,
    "MR": MRImageStorage,
    "CR": ComputedRadiographyImageStorage,
    "DX": DigitalXRayImageStorageForPresentation,
    "US": UltrasoundImageStorage,
}

DEFAULT_MANUFACTURER = {
    "CT": "company",
    "MR": "Philips",
    "CR": "Carestream",
    "DX": "Carestream",
    "US": "GE Healthcare",
}

DEFAULT_SERIES_DESCRIPTIONS = {
    "CT": ("Axial 5mm", "Coronal 3mm", "Sagittal 3mm", "Axial bone"),
    "MR": ("T1 axial", "T2 axial", "FLAIR axial", "DWI axial"),
    "CR": ("Chest PA", "Chest lateral"),
    "DX": ("Chest PA", "Chest lateral"),
    "US": ("Abdomen", "Liver", "Kidneys"),
}

BODY_PART = {"CT": "CHEST", "MR": "HEAD", "CR": "CHEST", "DX": "CHEST", "US": "ABDOMEN"}

PRIVATE_GROUP = 0x0011
PRIVATE_CREATOR = "PIXL STUDYGEN"
PHILIPS_PRIVATE_CREATOR = "Philips Imaging DD 001"
UID_ENTROPY_ROOT = "pixl-studygen"

# Fictional but plausible values. Surnames are uncommon so that a leak check
# by substring has no false positives; some carry a hyphen, an apostrophe or a
# non-ASCII letter, because real names do and de-identification must cope.
FAMILY_NAMES = (
    "Quarrington",
    "Abernethy",
    "Pemberton-Hale",
    "Thistlewood",
    "Fairweather",
    "Ravensworth",
    "Castellanos",
    "Achterberg",
    "O'Callaghan",
    "Lindqvist",
    "Oyelaran",
    "Devereux",
    "Nakamura-Shaw",
    "Brontë-Ashby",
    "Okonkwo-Reid",
    "Whitcombe",
)
GIVEN_NAMES = (
    "Eleanor",
    "Thaddeus",
    "Marguerite",
    "Oluwaseun",
    "Zoë",
    "Ignatius",
    "Rosalind",
    "Bartholomew",
    "Ximena",
    "Percival",
    "Henrietta",
    "Leopold",
)
MIDDLE_NAMES = ("Josephine", "Alastair", "Florentine", "Augustus", "Wilhelmina", "Cornelius")
PREFIXES = ("Mrs", "Mr", "Ms", "Dr", "")
STREETS = (
    "Larkspur Row",
    "Tannery Close",
    "Wickham Mews",
    "Ferrier Gardens",
    "Old Quarry Lane",
    "Bellhanger Street",
)
TOWNS = (
    ("Camden", "London", "NW1 7QT"),
    ("Hackney", "London", "E8 3RL"),
    ("Jesmond", "Newcastle", "NE2 4PZ"),
    ("Clifton", "Bristol", "BS8 2XQ"),
)
STAFF_FAMILY_NAMES = (
    "Hargreaves",
    "Montgomerie",
    "Abiodun",
    "Kristiansen",
    "Featherstone",
    "Vanterpool",
)
STAFF_GIVEN_NAMES = ("Imogen", "Rupert", "Adaeze", "Soren", "Philippa", "Desmond")
INSTITUTIONS = (
    ("St Aldric's Hospital", "1 Foundry Lane, London WC1E 6XX"),
    ("Royal Wexcombe Infirmary", "Infirmary Road, Wexcombe WX1 2AB"),
    ("Northgate General Hospital", "200 Northgate, Leeds LS2 9ZZ"),
)


@dataclass(frozen=True)
class PatientIdentity:
    """Who a generated study belongs to; every field is identifying."""

    mrn: str
    name: str  # DICOM PN: Family^Given^Middle^Prefix
    birth_date: str  # YYYYMMDD
    sex: str
    address: str
    telephone: tuple[str, ...]
    other_ids: tuple[str, ...]  # NHS number first

    @property
    def name_parts(self) -> tuple[str, ...]:
        """The non-empty name components (family, given, middle, prefix)."""
        return tuple(part for part in self.name.split("^") if part)


@dataclass(frozen=True)
class StaffAndSite:
    """People and places named in a patient's studies (derived from the patient)."""

    referring_physician: str
    operator: str
    performing_physician: str
    institution_name: str
    institution_address: str


@dataclass
class StudySpec:
    """What to generate; anything left as None is derived from `seed`."""

    modality: str = "CT"
    series: int = 2
    instances_per_series: int = 3
    accession: str | None = None
    study_uid: str | None = None
    study_date: datetime.date | str | None = None
    manufacturer: str | None = None
    seed: int = 0
    rows: int = 64
    columns: int = 64
    burned_in: bool = False
    secondary_capture: bool = False
    series_descriptions: Sequence[str] | None = None


@dataclass
class GeneratedStudy:
    patient: PatientIdentity
    accession: str
    study_uid: str
    study_date: datetime.date
    modality: str
    files: list[Path] = field(default_factory=list)

    @property
    def instance_count(self) -> int:
        return len(self.files)


def make_patient(seed: int) -> PatientIdentity:
    """A fictional patient, the same one for the same seed."""
    rng = random.Random(f"patient-{seed}")
    family = rng.choice(FAMILY_NAMES)
    given = rng.choice(GIVEN_NAMES)
    middle = rng.choice(MIDDLE_NAMES)
    prefix = rng.choice(PREFIXES)
    birth = datetime.date(1935, 1, 1) + datetime.timedelta(days=rng.randrange(365 * 70))
    district, town, postcode = rng.choice(TOWNS)
    return PatientIdentity(
        # Letters in the MRN keep it from matching digits inside UIDs by chance.
        mrn=f"{_letters(rng, 2)}{rng.randrange(10**6, 10**7)}",
        name=f"{family}^{given}^{middle}^{prefix}",
        birth_date=birth.strftime("%Y%m%d"),
        sex=rng.choice("MF"),
        address=f"{rng.randrange(1, 200)} {rng.choice(STREETS)}, {district}, {town} {postcode}",
        telephone=(f"020 7946 0{rng.randrange(1000):03d}", f"07700 900{rng.randrange(1000):03d}"),
        other_ids=(_nhs_test_number(rng), f"H{rng.randrange(10**7, 10**8)}"),
    )


def staff_and_site(patient: PatientIdentity) -> StaffAndSite:
    """Staff names and the institution in this patient's studies (fixed per patient)."""
    rng = random.Random(f"staff-{patient.mrn}")

    def staff_name() -> str:
        return f"{rng.choice(STAFF_FAMILY_NAMES)}^{rng.choice(STAFF_GIVEN_NAMES)}"

    institution_name, institution_address = rng.choice(INSTITUTIONS)
    return StaffAndSite(
        referring_physician=staff_name(),
        operator=staff_name(),
        performing_physician=staff_name(),
        institution_name=institution_name,
        institution_address=institution_address,
    )


def identifying_values(patient: PatientIdentity, accession: str) -> set[str]:
    """Every string of a generated study that must not survive de-identification.

    Includes whole values and their distinctive parts (each name component,
    the postcode), so free-text leaks are caught too. The birth date is eight
    digits and can occur by chance inside a long numeric UID: compare it with
    element values, not with UIDs.
    """
    site = staff_and_site(patient)
    values = {
        patient.mrn,
        patient.name,
        patient.birth_date,
        patient.address,
        " ".join(patient.address.split()[-2:]),  # the postcode
        accession,
        site.institution_name,
        site.institution_address,
        *patient.telephone,
        *patient.other_ids,
        *(part for part in patient.name_parts if part not in PREFIXES),
    }
    for staff in (site.referring_physician, site.operator, site.performing_physician):
        values.add(staff)
        values.update(staff.split("^"))
    return values


def generate_study(spec: StudySpec, patient: PatientIdentity) -> list[Dataset]:
    """All instances of one study, series by series, in instance order."""
    modality = spec.modality.upper()
    if modality not in SOP_CLASS_BY_MODALITY:
        raise ValueError(f"StudySpec.modality must be one of {MODALITIES}, got {spec.modality!r}")
    if spec.series < 1 or spec.instances_per_series < 1:
        raise ValueError("StudySpec.series and StudySpec.instances_per_series must be at least 1")

    rng = random.Random(f"study-{spec.seed}-{patient.mrn}")
    accession = spec.accession or default_accession(spec.seed, patient)
    study_uid = spec.study_uid or _uid("study", spec.seed, patient.mrn, accession)
    study_date = _as_date(spec.study_date) if spec.study_date else default_study_date(spec.seed)
    manufacturer = spec.manufacturer or DEFAULT_MANUFACTURER[modality]
    descriptions = list(spec.series_descriptions or DEFAULT_SERIES_DESCRIPTIONS[modality])

    study = _study_level(patient, accession, study_uid, study_date, modality, rng)
    sop_class = SOP_CLASS_BY_MODALITY[modality]
    instance_uids = [
        [_uid("instance", study_uid, s, i) for i in range(spec.instances_per_series)]
        for s in range(spec.series)
    ]

    datasets = []
    for s in range(spec.series):
        description = descriptions[s % len(descriptions)]
        if s >= len(descriptions):
            description = f"{description} {s // len(descriptions) + 1}"
        series = _series_level(
            study, patient, modality, s + 1, description, manufacturer, study_uid, s
        )
        for i, sop_uid in enumerate(instance_uids[s]):
            ds = _instance(series, sop_class, sop_uid, i + 1, study_date)
            _add_private_identifiers(ds, patient)
            _add_pixels(ds, modality, spec, seed=hash_seed(spec.seed, s, i))
            _add_modality_attributes(ds, modality, i, spec)
            refs = [(sop_class, instance_uids[s][0])] if i > 0 else []
            if s > 0:
                refs.append((sop_class, instance_uids[0][0]))
                ds.SourceImageSequence = _references([(sop_class, instance_uids[0][i])])
            if refs:
                ds.ReferencedImageSequence = _references(refs)
            datasets.append(ds)

    if spec.secondary_capture:
        datasets.append(
            _secondary_capture(
                study,
                patient,
                modality,
                manufacturer,
                spec,
                study_uid,
                study_date,
                source=(sop_class, instance_uids[0][0]),
            )
        )
    return datasets


def write_study(datasets: Sequence[Dataset], out_dir: Path) -> list[Path]:
    """Write each instance as a DICOM Part 10 file named by series and instance number."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = out_dir / f"{int(ds.SeriesNumber):03d}-{int(ds.InstanceNumber):04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def generate_cohort(
    n_studies: int,
    out_dir: Path,
    seed: int = 0,
    modalities: Sequence[str] = ("CT", "MR", "DX", "US"),
) -> list[GeneratedStudy]:
    """Write `n_studies` studies under `out_dir/study-NNNN/`, cycling through `modalities`.

    Every fifth study belongs to the previous study's patient, so a cohort
    exercises per-patient pseudonym reuse.
    """
    out_dir = Path(out_dir)
    studies = []
    patient = make_patient(seed * 1_000_003)
    for index in range(n_studies):
        if index % 5 != 4:
            patient = make_patient(seed * 1_000_003 + index)
        study_seed = seed * 1_000_003 + index
        modality = modalities[index % len(modalities)]
        spec = StudySpec(modality=modality, seed=study_seed)
        studies.append(write_generated_study(spec, patient, out_dir / f"study-{index:04d}"))
    return studies


def write_generated_study(spec: StudySpec, patient: PatientIdentity, out_dir: Path) -> GeneratedStudy:
    """Generate one study and write its files into `out_dir`."""
    datasets = generate_study(spec, patient)
    files = write_study(datasets, out_dir)
    first = datasets[0]
    return GeneratedStudy(
        patient=patient,
        accession=str(first.AccessionNumber),
        study_uid=str(first.StudyInstanceUID),
        study_date=_as_date(str(first.StudyDate)),
        modality=spec.modality,
        files=files,
    )


def default_accession(seed: int, patient: PatientIdentity) -> str:
    rng = random.Random(f"accession-{seed}-{patient.mrn}")
    return f"{_letters(rng, 2)}{rng.randrange(10**7, 10**8)}"


def default_study_date(seed: int) -> datetime.date:
    rng = random.Random(f"date-{seed}")
    return datetime.date(2015, 1, 1) + datetime.timedelta(days=rng.randrange(365 * 9))


def hash_seed(*parts: object) -> int:
    """A stable integer seed from several parts (Python's hash() is salted per process)."""
    return random.Random("-".join(map(str, parts))).randrange(2**32)


# --- levels of the study ------------------------------------------------------------------


def _study_level(
    patient: PatientIdentity,
    accession: str,
    study_uid: str,
    study_date: datetime.date,
    modality: str,
    rng: random.Random,
) -> Dataset:
    site = staff_and_site(patient)
    family, given = patient.name.split("^")[:2]
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = patient.name
    ds.PatientID = patient.mrn
    ds.IssuerOfPatientID = "PIXLHOSP"
    ds.OtherPatientIDs = list(patient.other_ids)
    ds.OtherPatientIDsSequence = DicomSequence(
        [_other_id(value, issuer) for value, issuer in zip(patient.other_ids, ("NHS", "HOSPB"))]
    )
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.PatientAge = f"{_age(patient.birth_date, study_date):03d}Y"
    ds.PatientAddress = patient.address
    ds.PatientTelephoneNumbers = list(patient.telephone)
    ds.PatientWeight = str(rng.randrange(45, 110))
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = study_date.strftime("%Y%m%d")
    ds.StudyTime = f"{rng.randrange(8, 18):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"
    ds.AccessionNumber = accession
    ds.StudyID = accession[-16:]
    ds.StudyDescription = f"{modality} {BODY_PART[modality]} - {family} {given}"
    ds.ReferringPhysicianName = site.referring_physician
    ds.InstitutionName = site.institution_name
    ds.InstitutionAddress = site.institution_address
    ds.ReferencedStudySequence = _references(
        [("1.2.840.10008.3.1.2.3.1", _uid("prior-study", patient.mrn))]
    )
    ds.ReferencedPatientSequence = _references(
        [("1.2.840.10008.3.1.2.1.1", _uid("patient", patient.mrn))]
    )
    request = Dataset()
    request.AccessionNumber = accession
    request.RequestedProcedureID = accession
    request.ScheduledProcedureStepID = f"SPS{accession}"
    request.RequestedProcedureDescription = f"{modality} {BODY_PART[modality]}"
    request.ReferencedStudySequence = _references([("1.2.840.10008.3.1.2.3.1", study_uid)])
    ds.RequestAttributesSequence = DicomSequence([request])
    return ds


def _add_private_identifiers(ds: Dataset, patient: PatientIdentity) -> None:
    """A site-specific private block carrying identifiers, as some RIS integrations write.

    Added to each finished instance: pydicom caches private blocks per dataset, and a
    deep copy of a dataset with a cached block points the copy's cache at a stale dataset.
    """
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", patient.mrn)
    block.add_new(0x02, "PN", patient.name)
    block.add_new(0x03, "LO", "routine")


def _series_level(
    study: Dataset,
    patient: PatientIdentity,
    modality: str,
    number: int,
    description: str,
    manufacturer: str,
    study_uid: str,
    series_index: int,
) -> Dataset:
    ds = _copy(study)
    site = staff_and_site(patient)
    ds.Modality = modality
    ds.SeriesInstanceUID = _uid("series", study_uid, series_index)
    ds.SeriesNumber = number
    ds.SeriesDescription = description
    ds.ProtocolName = description
    ds.BodyPartExamined = BODY_PART[modality]
    ds.OperatorsName = site.operator
    ds.PerformingPhysicianName = site.performing_physician
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = f"{manufacturer} {modality} 3000"
    ds.StationName = f"{modality}STATION{series_index % 3 + 1}"
    ds.DeviceSerialNumber = f"SN{hash_seed(manufacturer, modality) % 100000:05d}"
    ds.SoftwareVersions = "5.1.2"
    if modality in ("CT", "MR"):
        ds.FrameOfReferenceUID = _uid("frame", study_uid, series_index)
        ds.PositionReferenceIndicator = ""
    return ds


def _instance(
    series: Dataset, sop_class: str, sop_uid: str, number: int, study_date: datetime.date
) -> Dataset:
    ds = _copy(series)
    ds.file_meta = _file_meta(sop_class, sop_uid)  # its transfer syntax names the encoding
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = number
    ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study_date.strftime("%Y%m%d")
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = ds.StudyTime
    ds.ImageType = (
        ["ORIGINAL", "PRIMARY", "AXIAL"] if ds.Modality in ("CT", "MR") else ["ORIGINAL", "PRIMARY"]
    )
    ds.BurnedInAnnotation = "NO"
    return ds


def _secondary_capture(
    study: Dataset,
    patient: PatientIdentity,
    modality: str,
    manufacturer: str,
    spec: StudySpec,
    study_uid: str,
    study_date: datetime.date,
    source: tuple[str, str],
) -> Dataset:
    """A screen capture (e.g. a dose report) in its own series, after the image series."""
    series = _series_level(
        study,
        patient,
        modality,
        spec.series + 1,
        "Dose report",
        manufacturer,
        study_uid,
        spec.series,
    )
    sop_uid = _uid("instance", study_uid, spec.series, 0)
    ds = _instance(series, SecondaryCaptureImageStorage, sop_uid, 1, study_date)
    _add_private_identifiers(ds, patient)
    ds.ConversionType = "WSD"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SourceImageSequence = _references([source])
    ds.BurnedInAnnotation = "YES"
    _add_grey_pixels(
        ds, spec.rows, spec.columns, bits_stored=8, seed=hash_seed(spec.seed, "sc"), burned_in=True
    )
    return ds


# --- pixel data and modality-specific attributes --------------------------------------------


def _add_pixels(ds: Dataset, modality: str, spec: StudySpec, seed: int) -> None:
    if modality == "US":
        _add_rgb_pixels(ds, spec.rows, spec.columns, seed, spec.burned_in)
    else:
        _add_grey_pixels(
            ds, spec.rows, spec.columns, bits_stored=12, seed=seed, burned_in=spec.burned_in
        )
    if spec.burned_in:
        ds.BurnedInAnnotation = "YES"


def _add_grey_pixels(
    ds: Dataset, rows: int, columns: int, bits_stored: int, seed: int, burned_in: bool
) -> None:
    """A noisy disc phantom; with burned_in, a bright text-like band across the top rows."""
    rng = np.random.default_rng(seed)
    top = (1 << bits_stored) - 1
    y, x = np.ogrid[:rows, :columns]
    disc = ((y - rows / 2) ** 2 + (x - columns / 2) ** 2) < (min(rows, columns) * 0.4) ** 2
    image = rng.integers(0, top // 8, size=(rows, columns))
    image[disc] += top // 2
    if burned_in:
        band = image[: max(2, rows // 10)]
        band[:, ::2] = top
    pixels = np.clip(image, 0, top).astype(np.uint8 if bits_stored <= 8 else np.uint16)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated = pixels.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()


def _add_rgb_pixels(ds: Dataset, rows: int, columns: int, seed: int, burned_in: bool) -> None:
    rng = np.random.default_rng(seed)
    grey = rng.integers(0, 60, size=(rows, columns), dtype=np.uint8)
    y, x = np.ogrid[:rows, :columns]
    sector = (np.abs(x - columns / 2) < (y + 1) * 0.6) & (y > rows // 8)
    grey[sector] += 120
    image = np.repeat(grey[:, :, None], 3, axis=2)
    if burned_in:
        image[: max(2, rows // 10), ::2] = (255, 255, 0)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = image.tobytes()


def _add_modality_attributes(ds: Dataset, modality: str, index: int, spec: StudySpec) -> None:
    if modality == "CT":
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.KVP = 120
        ds.WindowCenter, ds.WindowWidth = 40, 400
    if modality == "MR":
        ds.RepetitionTime, ds.EchoTime, ds.MagneticFieldStrength = 500, 15, 3
        ds.ScanningSequence, ds.SequenceVariant = "SE", "NONE"
        ds.FlipAngle = 90
        if ds.Manufacturer.lower().startswith("philips"):
            philips = ds.private_block(0x2001, PHILIPS_PRIVATE_CREATOR, create=True)
            philips.add_new(0x23, "DS", "90")
    if modality in ("CT", "MR"):
        ds.SliceThickness = 5
        ds.PixelSpacing = [0.7, 0.7]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-22.4, -22.4, round(5.0 * index, 1)]
        ds.SliceLocation = round(5.0 * index, 1)
    if modality in ("CR", "DX"):
        ds.ViewPosition = "PA" if index % 2 == 0 else "LL"
        ds.ImagerPixelSpacing = [0.15, 0.15]
        ds.PatientOrientation = ["P", "F"]
        if modality == "DX":
            ds.PresentationIntentType = "FOR PRESENTATION"
    if modality == "US":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL"]
        ds.SequenceOfUltrasoundRegions = DicomSequence([_ultrasound_region(spec)])


def _ultrasound_region(spec: StudySpec) -> Dataset:
    """The scan area below the header band where scanners burn in text."""
    region = Dataset()
    region.RegionSpatialFormat = 1  # 2D
    region.RegionDataType = 1  # tissue
    region.RegionFlags = 0
    region.RegionLocationMinX0 = 0
    region.RegionLocationMinY0 = spec.rows // 8
    region.RegionLocationMaxX1 = spec.columns - 1
    region.RegionLocationMaxY1 = spec.rows - 1
    region.ReferencePixelX0 = spec.columns // 2
    region.ReferencePixelY0 = spec.rows // 8
    region.PhysicalUnitsXDirection = 3  # cm
    region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX = 0.05
    region.PhysicalDeltaY = 0.05
    return region


# --- small helpers -----------------------------------------------------------------------------


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "PIXL_STUDYGEN"
    return meta


def _references(pairs: Sequence[tuple[str, str]]) -> DicomSequence:
    items = []
    for sop_class, sop_uid in pairs:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_uid
        items.append(item)
    return DicomSequence(items)


def _other_id(value: str, issuer: str) -> Dataset:
    item = Dataset()
    item.PatientID = value
    item.IssuerOfPatientID = issuer
    item.TypeOfPatientID = "TEXT"
    return item


def _copy(ds: Dataset) -> Dataset:
    # deepcopy keeps sequences and private blocks independent between instances.
    return copy.deepcopy(ds)


def _uid(*parts: object) -> str:
    """A deterministic 2.25 UID (UUID-derived, PS3.5 B.2) from the given parts.

    pydicom's generate_uid ignores its entropy sources when prefix is None.
    """
    name = "/".join([UID_ENTROPY_ROOT, *map(str, parts)])
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}"


def _as_date(value: datetime.date | str) -> datetime.date:
    if isinstance(value, datetime.date):
        return value
    text = value.replace("-", "")
    try:
        return datetime.datetime.strptime(text, "%Y%m%d").date()
    except ValueError as exc:
        raise ValueError(f"study_date must be YYYYMMDD or YYYY-MM-DD, got {value!r}") from exc


def _age(birth_date: str, on: datetime.date) -> int:
    born = datetime.datetime.strptime(birth_date, "%Y%m%d").date()
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def _letters(rng: random.Random, count: int) -> str:
    return "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(count))


def _nhs_test_number(rng: random.Random) -> str:
    """A 999-range NHS number with a valid modulus-11 check digit."""
    while True:
        digits = [9, 9, 9] + [rng.randrange(10) for _ in range(6)]
        check = 11 - sum(d * w for d, w in zip(digits, range(10, 1, -1))) % 11
        if check == 11:
            check = 0
        if check != 10:
            return "".join(map(str, digits)) + str(check)
