"""Which instances a project wants: modality, manufacturer, series description,
burned-in text risk; and the study-level minimum of instances per series.

Each check is a pure function of an `InstanceFacts` (read once from the
source instance) and the project; the first that objects decides. A "drop" is
an instance the project does not want; a "quarantine" is one that may carry
identifying pixels and is kept aside for review. Reasons never quote a value
that could identify anyone (a series description can, so it is not quoted).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from pydicom.dataset import Dataset

from orthanc_plugins.anon.deid.values import first_text, text_codec, text_values
from orthanc_plugins.common.projects import ProjectConfig

DROP = "drop"
QUARANTINE = "quarantine"

SECONDARY_CAPTURE_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
# Encapsulated PDF, CDA, STL, OBJ, MTL: documents, text by nature.
DOCUMENT_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.104."
SCREEN_SAVE_IMAGE_TYPES = frozenset({"SCREEN SAVE", "SCREENSHOT", "SCREEN CAPTURE"})
# Modalities whose images often carry burned-in text (scanner annotations, captured
# screens, photographs of forms): held back unless the project clears them.
TEXT_PRONE_MODALITIES = frozenset({"US", "IVUS", "SC", "XA", "RF", "ES", "XC", "GM", "SM", "OP",
                                   "DOC", "OT", "ECG", "HD", "PX", "IO"})


@dataclass(frozen=True)
class Verdict:
    action: str  # DROP or QUARANTINE
    reason: str


@dataclass(frozen=True)
class InstanceFacts:
    modality: str
    manufacturer: str
    series_number: int | None
    series_description: str
    image_type: tuple[str, ...]
    burned_in_annotation: str
    sop_class_uid: str
    has_ultrasound_regions: bool
    has_pixels: bool = True


def instance_facts(ds: Dataset) -> InstanceFacts:
    codec = text_codec(ds)
    series_number = first_text(ds, 0x00200011, codec)
    regions = ds._dict.get(0x00186011)
    return InstanceFacts(
        modality=first_text(ds, 0x00080060, codec).upper(),
        manufacturer=first_text(ds, 0x00080070, codec),
        series_number=_integer(series_number),
        series_description=first_text(ds, 0x0008103E, codec),
        image_type=tuple(v.upper() for v in text_values(ds, 0x00080008, codec)),
        burned_in_annotation=first_text(ds, 0x00280301, codec).upper(),
        sop_class_uid=first_text(ds, 0x00080016, codec).rstrip("\x00"),
        has_ultrasound_regions=regions is not None and bool(regions.value),
        has_pixels=any(tag in ds._dict for tag in (0x7FE00010, 0x7FE00008, 0x7FE00009)),
    )


def _integer(text: str) -> int | None:
    try:
        return int(float(text)) if text else None
    except ValueError:
        return None


@dataclass(frozen=True)
class CompiledFilters:
    modalities: frozenset[str]
    manufacturers: tuple[tuple[re.Pattern[str], frozenset[int]], ...]
    series_filters: tuple[str, ...]

    @classmethod
    def from_config(cls, config: ProjectConfig) -> CompiledFilters:
        return cls(
            modalities=frozenset(config.modalities),
            manufacturers=tuple(
                (re.compile(rule.regex, re.IGNORECASE), frozenset(rule.exclude_series_numbers))
                for rule in config.allowed_manufacturers
            ),
            series_filters=config.series_filters,
        )


def check_modality(facts: InstanceFacts, filters: CompiledFilters) -> Verdict | None:
    if facts.modality not in filters.modalities:
        return Verdict(DROP, f"modality {facts.modality or '(none)'} is not one of the project's")
    return None


def check_manufacturer(facts: InstanceFacts, filters: CompiledFilters) -> Verdict | None:
    """Allowed if some rule's regex matches; excluded series numbers apply per matching rule."""
    matched = False
    for regex, excluded in filters.manufacturers:
        if regex.search(facts.manufacturer):
            matched = True
            if facts.series_number is not None and facts.series_number in excluded:
                return Verdict(DROP, f"series number {facts.series_number} is excluded for "
                                     f"manufacturer rule {regex.pattern!r}")
    if not matched:
        return Verdict(DROP, "manufacturer is not in allowed_manufacturers")
    return None


def check_series_description(facts: InstanceFacts, filters: CompiledFilters) -> Verdict | None:
    description = facts.series_description.lower()
    for word in filters.series_filters:
        if word in description:
            return Verdict(DROP, f"series description matches series filter {word!r}")
    return None


def burned_in_risks(facts: InstanceFacts) -> list[str]:
    """Why this instance may show burned-in text (empty when there is no known risk)."""
    risks = []
    if facts.burned_in_annotation == "YES":
        risks.append("burned_in_annotation")
    if facts.sop_class_uid.startswith(SECONDARY_CAPTURE_CLASS_PREFIX):
        risks.append("secondary_capture")
    if SCREEN_SAVE_IMAGE_TYPES.intersection(facts.image_type):
        risks.append("screen_save")
    if facts.sop_class_uid.startswith(DOCUMENT_CLASS_PREFIX):
        risks.append("document")
    if facts.modality in TEXT_PRONE_MODALITIES and facts.has_pixels:
        risks.append("modality")
    return risks


def check_burned_in_text(
    facts: InstanceFacts, config: ProjectConfig, masked: bool, cleared: bool = False
) -> Verdict | None:
    """Instances at risk are dropped or quarantined unless the project allows that risk.

    `masked`: the project's recipe blanked the pixels where text is written (e.g. all but
    the ultrasound regions); `cleared`: the recipe's whitelist says the image is clean.
    Either deals with burned-in annotation and text-prone modalities; secondary captures,
    screen saves and documents need the project's own flag.
    """
    policy = config.burned_in_text
    allowed = {
        "burned_in_annotation": policy.allow_burned_in_annotation or masked or cleared,
        "secondary_capture": policy.allow_secondary_capture,
        "screen_save": policy.allow_screen_save,
        "document": facts.modality in policy.allow_modalities,
        "modality": facts.modality in policy.allow_modalities or masked or cleared,
    }
    for risk in burned_in_risks(facts):
        if not allowed[risk]:
            what = f"modality {facts.modality}" if risk == "modality" else risk.replace("_", " ")
            return Verdict(policy.action, f"burned-in text risk: {what}")
    return None


def select_instance(facts: InstanceFacts, filters: CompiledFilters) -> Verdict | None:
    """The project-wanted checks, in order; burned-in text is checked by the engine
    after masking has had its chance."""
    for check in (check_modality, check_manufacturer, check_series_description):
        verdict = check(facts, filters)
        if verdict is not None:
            return verdict
    return None


SeriesKey = TypeVar("SeriesKey", bound=Hashable)


def series_below_minimum(counts: Mapping[SeriesKey, int], minimum: int) -> set[SeriesKey]:
    """The series of a study with fewer instances than the project's
    `min_instances_per_series`; apply after filtering, before export."""
    return {series for series, count in counts.items() if count < minimum}
