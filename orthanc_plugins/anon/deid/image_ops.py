"""Image operations: PIXL's `deid` recipe files, and masking pixels outside ultrasound regions.

PIXL projects name recipes in `image_operation_files.deid_recipes`. We support
the recipe PIXL ships for ultrasound (whitelist images marked
`BurnedInAnnotation No`; otherwise keep only the pixels inside
SequenceOfUltrasoundRegions). Any other directive is a configuration error,
so a recipe is never half-applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from orthanc_plugins.common.projects import ProjectConfigError

# Recipe lines we understand, as (section, normalised line).
_WHITELIST_CLEAN = ("whitelist", "contains burnedinannotation no")
_GRAYLIST_LINES = {
    "coordinates all",
    "present sequenceofultrasoundregions",
    "keepcoordinates from:sequenceofultrasoundregions",
}
_SECTIONS = ("whitelist", "graylist", "blacklist")


@dataclass(frozen=True)
class ImageOperations:
    mask_ultrasound_regions: bool = False
    # Images marked BurnedInAnnotation NO are left untouched by the mask.
    trust_burned_in_annotation_no: bool = False


class MaskingError(Exception):
    """The pixels of an instance cannot be masked (the reason never holds a value)."""


def load_image_operations(recipe_files: tuple[Path, ...]) -> ImageOperations:
    mask = trust_no = False
    for path in recipe_files:
        file_mask, file_trust = _parse_recipe(path)
        mask, trust_no = mask or file_mask, trust_no or file_trust
    return ImageOperations(mask_ultrasound_regions=mask, trust_burned_in_annotation_no=trust_no)


def _parse_recipe(path: Path) -> tuple[bool, bool]:
    section = None
    mask = trust_no = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = " ".join(line.split()).lower()
        if not text or text.startswith(("#", "label ")) or text == "format dicom":
            continue
        if text.startswith("%filter "):
            section = text.removeprefix("%filter ")
            if section not in _SECTIONS:
                raise ProjectConfigError(path, f"line {number}", f"unknown filter section {section!r}")
            continue
        if (section, text) == _WHITELIST_CLEAN:
            trust_no = True
        elif section == "graylist" and text in _GRAYLIST_LINES:
            mask = mask or text.startswith("keepcoordinates")
        else:
            raise ProjectConfigError(path, f"line {number}", f"unsupported recipe directive {line.strip()!r}")
    return mask, trust_no


def ultrasound_regions(ds: Dataset) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of each region in SequenceOfUltrasoundRegions, inclusive."""
    regions = []
    for item in ds.get("SequenceOfUltrasoundRegions", []):
        try:
            regions.append((int(item.RegionLocationMinX0), int(item.RegionLocationMinY0),
                            int(item.RegionLocationMaxX1), int(item.RegionLocationMaxY1)))
        except AttributeError:
            raise MaskingError("an ultrasound region lacks its location") from None
    return regions


def mask_outside_regions(ds: Dataset, regions: list[tuple[int, int, int, int]]) -> None:
    """Zero every pixel outside the regions, in every frame; native pixel data only."""
    if not regions:
        raise MaskingError("no ultrasound regions to keep")
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        raise MaskingError("pixel data is compressed; it cannot be masked")
    if int(ds.BitsAllocated) == 1 or ds.PhotometricInterpretation == "YBR_FULL_422":
        raise MaskingError("pixel data layout cannot be masked in place")
    pixels = ds.pixel_array.copy()
    rows, columns = int(ds.Rows), int(ds.Columns)
    keep = np.zeros((rows, columns), dtype=bool)
    for x0, y0, x1, y1 in regions:
        keep[max(0, y0): y1 + 1, max(0, x0): x1 + 1] = True
    # Frames come first and samples last in pydicom's arrays: broadcast the 2-D mask.
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    mask = keep if frames == 1 else keep[None, ...]
    if int(ds.SamplesPerPixel) > 1:
        mask = mask[..., None]
    pixels = np.where(mask, pixels, 0).astype(pixels.dtype)
    if int(ds.SamplesPerPixel) > 1 and int(ds.get("PlanarConfiguration", 0)) == 1:
        pixels = np.moveaxis(pixels, -1, -3)  # back to colour-by-plane order
    ds.PixelData = pixels.tobytes()
