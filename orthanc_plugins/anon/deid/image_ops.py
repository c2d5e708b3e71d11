"""Image operations: PIXL's `deid` recipe files (the pixel filters of pydicom/deid), applied.

A recipe has `%filter whitelist`, `%filter graylist` and `%filter blacklist`
sections of `LABEL` groups. A group holds criteria lines and coordinates:

    LABEL Clean Ultrasound Regions
        present SequenceOfUltrasoundRegions
        + notequals Modality CT || contains ImageType DERIVED
        keepcoordinates from:SequenceOfUltrasoundRegions

Criteria are deid's: `contains FIELD REGEX`, `notcontains FIELD REGEX`,
`equals FIELD VALUE`, `notequals FIELD VALUE` (case-insensitive), `missing
FIELD`, `present FIELD`, `empty FIELD`; `+` joins with "and", `||` with "or",
left to right, within a line and between lines. A group without criteria
matches every image. Coordinates: `coordinates x0,y0,x1,y1` blanks the box,
`keepcoordinates x0,y0,x1,y1` keeps it, `ctpcoordinates`/`ctpkeepcoordinates`
take CTP's `x,y,width,height`; the value `all` is the whole image and
`from:SequenceOfUltrasoundRegions` the image's regions. As in deid, the
coordinates of every matching group apply in recipe order on a mask that
starts as "keep everything" (`coordinates all` then `keepcoordinates
from:...` keeps only the regions).

How the sections decide, as PIXL uses them: an image matching a whitelist
group is cleared as it is (it is known clean); one matching a blacklist
group without coordinates is held back; otherwise the coordinates of the
matching groups are applied. Any other directive is a configuration error,
so a recipe is never half-applied. Masking works on native pixel data only
(a compressed image would have to be re-encoded: it is held back instead).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from orthanc_plugins.anon.deid.pixels import PixelCleaningError, PixelLayout
from orthanc_plugins.anon.deid.values import dataset_encoding
from orthanc_plugins.common.projects import ProjectConfigError

SECTIONS = ("whitelist", "graylist", "blacklist")
CRITERIA = ("contains", "notcontains", "equals", "notequals", "missing", "present", "empty")
_VALUED = frozenset({"contains", "notcontains", "equals", "notequals"})
COORDINATES = {"coordinates": 0, "keepcoordinates": 1, "ctpcoordinates": 0,
               "ctpkeepcoordinates": 1}
ALL = "all"
REGIONS = "from:sequenceofultrasoundregions"

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive, as deid slices)


class MaskingError(Exception):
    """The pixels of an instance cannot be masked (the reason never holds a value)."""


@dataclass(frozen=True)
class Criterion:
    action: str
    keyword: str
    value: str | None

    def matches(self, ds: Dataset) -> bool:
        present = self.keyword in ds
        value = ds.get(self.keyword) if present else None
        if self.action == "missing":
            return value is None
        if self.action == "present":
            return value is not None
        if self.action == "empty":
            return present and (value == "" or value is None or value == [])
        values = list(value) if isinstance(value, MultiValue | list) else [value]
        texts = [str(v).strip().lower() for v in values
                 if v is not None and not isinstance(v, Sequence | Dataset)]
        term = (self.value or "").strip().lower()
        if self.action in ("equals", "notequals"):
            hit = term in texts
            return hit if self.action == "equals" else not hit
        hit = any(re.search(term, text) for text in texts)
        return hit if self.action == "contains" else not hit


@dataclass(frozen=True)
class Line:
    operator: str | None  # how it joins the lines before it: "and", "or" (None: "and")
    terms: tuple[tuple[str | None, Criterion], ...]  # (joins the term before, criterion)


@dataclass(frozen=True)
class Group:
    section: str
    label: str
    lines: tuple[Line, ...]
    coordinates: tuple[tuple[int, str, bool], ...]  # (mask value, box text, CTP form)

    def matches(self, ds: Dataset) -> bool:
        if not self.lines:
            return True
        result = False
        for index, line in enumerate(self.lines):
            value = _fold(line.terms, ds)
            result = value if index == 0 else (result or value) if line.operator == "or" \
                else (result and value)
        return result


def _fold(terms: tuple[tuple[str | None, Criterion], ...], ds: Dataset) -> bool:
    result = False
    for index, (operator, criterion) in enumerate(terms):
        value = criterion.matches(ds)
        result = value if index == 0 else (result or value) if operator == "or" \
            else (result and value)
    return result


@dataclass(frozen=True)
class PixelDecision:
    """What the recipes make of one image."""
    cleared: str | None = None  # label of the whitelist group that clears it
    held_back: str | None = None  # label of the blacklist group that holds it back
    coordinates: tuple[tuple[int, str, bool], ...] = ()
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageOperations:
    groups: tuple[Group, ...] = field(default_factory=tuple)

    @property
    def mask_ultrasound_regions(self) -> bool:
        """Whether some group keeps the ultrasound regions (what PIXL's recipe is for)."""
        return any(text == REGIONS and value == 1
                   for group in self.groups for value, text, _ in group.coordinates)

    def decide(self, ds: Dataset) -> PixelDecision | None:
        """None without recipes; else the first whitelist or blacklist verdict, or the
        coordinates of every matching graylist (and blacklist) group, in recipe order."""
        if not self.groups:
            return None
        matching = [group for group in self.groups if group.matches(ds)]
        for group in matching:
            if group.section == "whitelist":
                return PixelDecision(cleared=group.label)
        for group in matching:
            if group.section == "blacklist" and not group.coordinates:
                return PixelDecision(held_back=group.label)
        coordinates = tuple(c for group in matching for c in group.coordinates)
        return PixelDecision(coordinates=coordinates,
                             labels=tuple(g.label for g in matching if g.coordinates))


def load_image_operations(recipe_files: tuple[Path, ...]) -> ImageOperations:
    groups: list[Group] = []
    for path in recipe_files:
        groups.extend(parse_recipe(path))
    return ImageOperations(groups=tuple(groups))


def parse_recipe(path: Path) -> list[Group]:
    section: str | None = None
    groups: list[Group] = []
    label: str | None = None
    lines: list[Line] = []
    coordinates: list[tuple[int, str, bool]] = []

    def close() -> None:
        if label is not None and section is not None:
            groups.append(Group(section, label, tuple(lines), tuple(coordinates)))

    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        where = f"line {number}"
        text = " ".join(raw.split())
        lowered = text.lower()
        if not text or text.startswith("#") or lowered == "format dicom":
            continue
        if lowered.startswith("%filter"):
            close()
            label, lines, coordinates = None, [], []
            section = lowered.removeprefix("%filter").strip()
            if section not in SECTIONS:
                raise ProjectConfigError(path, where, f"unknown filter section {section!r}")
            continue
        if lowered.startswith("%"):
            raise ProjectConfigError(path, where, f"unsupported recipe section {text!r} (only "
                                     "%filter sections apply to images)")
        if section is None:
            raise ProjectConfigError(path, where, "a directive outside any %filter section")
        if lowered.startswith("label"):
            close()
            label, lines, coordinates = text[5:].strip() or f"line {number}", [], []
            continue
        if label is None:
            raise ProjectConfigError(path, where, "a directive before any LABEL")
        first = lowered.split(" ", 1)[0]
        if first in COORDINATES:
            coordinates.append(_coordinates(path, where, first, text))
        else:
            lines.append(_criteria_line(path, where, text))
    close()
    return groups


def _coordinates(path: Path, where: str, directive: str, text: str) -> tuple[int, str, bool]:
    parts = text.split(" ", 1)
    value = parts[1].strip().lower() if len(parts) > 1 else ""
    if value not in (ALL, REGIONS) and not re.fullmatch(r"\d+,\d+,\d+,\d+", value.replace(" ", "")):
        raise ProjectConfigError(path, where, f"{directive} takes 'all', "
                                 "'from:SequenceOfUltrasoundRegions' or x0,y0,x1,y1")
    return COORDINATES[directive], value.replace(" ", ""), directive.startswith("ctp")


def _criteria_line(path: Path, where: str, text: str) -> Line:
    tokens = text.split(" ")
    operator = None
    if tokens[0] in ("+", "||"):
        operator = "and" if tokens.pop(0) == "+" else "or"
    terms: list[tuple[str | None, Criterion]] = []
    joiner: str | None = None
    while tokens:
        action = tokens.pop(0).lower()
        if action not in CRITERIA:
            raise ProjectConfigError(path, where, f"unsupported recipe directive {text!r}")
        if not tokens:
            raise ProjectConfigError(path, where, f"{action} needs a field")
        keyword = tokens.pop(0)
        if not tag_for_keyword(keyword):
            raise ProjectConfigError(path, where, f"unknown DICOM keyword {keyword!r}")
        value = None
        if action in _VALUED:
            words = []
            while tokens and tokens[0] not in ("+", "||"):
                words.append(tokens.pop(0))
            if not words:
                raise ProjectConfigError(path, where, f"{action} needs a value")
            value = " ".join(words)
            if action in ("contains", "notcontains"):
                try:
                    re.compile(value)
                except re.error as exc:
                    raise ProjectConfigError(path, where, f"invalid regex: {exc}") from None
        terms.append((joiner, Criterion(action, keyword, value)))
        joiner = None
        if tokens:
            joiner = "and" if tokens.pop(0) == "+" else "or"
            if not tokens:
                raise ProjectConfigError(path, where, "a line ends with an operator")
    return Line(operator, tuple(terms))


# --- masking -------------------------------------------------------------------------------------


def ultrasound_regions(ds: Dataset) -> list[Box]:
    """(x0, y0, x1, y1) of each region in SequenceOfUltrasoundRegions; DICOM's MaxX1 and MaxY1
    are the region's last pixels, so x1 and y1 here are one past them."""
    regions = []
    for item in ds.get("SequenceOfUltrasoundRegions", []):
        try:
            regions.append((int(item.RegionLocationMinX0), int(item.RegionLocationMinY0),
                            int(item.RegionLocationMaxX1) + 1, int(item.RegionLocationMaxY1) + 1))
        except AttributeError:
            raise MaskingError("an ultrasound region lacks its location") from None
    return regions


def apply_coordinates(ds: Dataset, coordinates: tuple[tuple[int, str, bool], ...],
                      compressed: bool) -> None:
    """Blank the pixels the coordinates say, in every frame; native pixel data only."""
    if not coordinates:
        return
    if compressed:
        raise MaskingError("pixel data is compressed; it cannot be masked without re-encoding")
    try:
        layout = PixelLayout.of(ds)
    except PixelCleaningError as exc:
        raise MaskingError(str(exc)) from None
    keep = np.ones((layout.rows, layout.columns), dtype=bool)
    for value, text, ctp in coordinates:
        boxes = [(0, 0, layout.columns, layout.rows)] if text == ALL else \
            ultrasound_regions(ds) if text == REGIONS else [_box(text, ctp)]
        for x0, y0, x1, y1 in boxes:
            keep[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = bool(value)
    mask_pixels(ds, layout, keep)


def _box(text: str, ctp: bool) -> Box:
    a, b, c, d = (int(v) for v in text.split(","))
    return (a, b, a + c, b + d) if ctp else (a, b, c, d)


def mask_pixels(ds: Dataset, layout: PixelLayout, keep: np.ndarray) -> None:
    """Set every pixel outside `keep` to black: 0, or for YBR the black of that space
    (Y 0, Cb and Cr at mid-range), so a masked colour image is not green."""
    if layout.bits_allocated not in (8, 16, 32) or layout.photometric in (
            "YBR_FULL_422", "YBR_PARTIAL_422"):
        raise MaskingError("pixel data layout cannot be masked in place")
    little = dataset_encoding(ds)[1]
    dtype = np.dtype(f"{'<' if little else '>'}{'i' if layout.signed else 'u'}"
                     f"{layout.bits_allocated // 8}")
    data = ds.PixelData
    count = layout.native_length // dtype.itemsize
    if len(data) < layout.native_length:
        raise MaskingError("Pixel Data is shorter than its image attributes say")
    pixels = np.frombuffer(data, dtype=dtype, count=count).copy()
    planar = layout.samples > 1 and int(ds.get("PlanarConfiguration") or 0) == 1
    shape = (layout.frames, layout.samples, layout.rows, layout.columns) if planar else \
        (layout.frames, layout.rows, layout.columns, layout.samples)
    pixels = pixels.reshape(shape)
    black = _black(layout)
    for sample, fill in enumerate(black):
        plane = pixels[:, sample] if planar else pixels[..., sample]
        plane[:, ~keep] = fill
    ds.PixelData = pixels.tobytes() + data[layout.native_length:]


def _black(layout: PixelLayout) -> list[int]:
    if layout.photometric.startswith("YBR") and layout.samples == 3:
        middle = 1 << (layout.bits_stored - 1)
        return [0, middle, middle]
    if layout.photometric == "MONOCHROME1":  # 0 is white there
        return [(1 << layout.bits_stored) - 1 if not layout.signed
                else (1 << (layout.bits_stored - 1)) - 1]
    return [0] * layout.samples
