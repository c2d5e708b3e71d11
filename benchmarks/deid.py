"""De-identification speed: our engine against pydicom alone and two open-source peers.

    .venv/bin/python -m benchmarks.deid [--studies 10] [--instances 25] [--size 512] [--repeat 3]

A generated corpus of CT-like studies (pixl_stack.studygen, 2 series each) is
held in memory as DICOM bytes. Each contender reads every instance from
bytes, does its work and writes it back to bytes, so all pay the same I/O:

- floor: pydicom read + write, nothing else (what any engine that reads and
  writes with pydicom pays at least);
- pixl: `deidentify_instance` with the demo project (rules, pseudonyms, date
  shift, de-identification record, leak guard); it reads with pydicom but
  writes with its own encoder (the same bytes as pydicom's), so it can run
  under the floor;
- dicognito: `Anonymizer().anonymize` (one anonymizer, as its CLI does);
- dicom-anonymizer: `anonymize_dataset` with its default rules.

Runs are interleaved and the best of `--repeat` is kept. The last line is
key=value pairs; the goal is pixl_vs_floor <= 1.3 and both peers at least
2.5x slower than pixl.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from io import BytesIO

from dicognito.anonymizer import Anonymizer
from dicomanonymizer import anonymize_dataset
from pydicom import dcmread
from pydicom.filewriter import dcmwrite

from orthanc_plugins.anon.deid.engine import KEPT, deidentify_instance, load_compiled_project
from orthanc_plugins.common.settings import REPO_ROOT
from pixl_stack.studygen import StudySpec, generate_study, make_patient

KEY = b"benchmark-key-0123456789abcdef0123"


def corpus(studies: int, instances: int, size: int) -> list[bytes]:
    files = []
    for index in range(studies):
        spec = StudySpec(modality="CT", series=2, instances_per_series=instances, seed=index,
                         rows=size, columns=size)
        for ds in generate_study(spec, make_patient(index)):
            files.append(_write(ds))
    return files


def _write(ds) -> bytes:
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def floor(data: bytes) -> bytes:
    return _write(dcmread(BytesIO(data)))


def make_pixl() -> Callable[[bytes], bytes]:
    project = load_compiled_project("demo", REPO_ROOT / "projects", REPO_ROOT / "tag_rules")

    def pixl(data: bytes) -> bytes:
        result = deidentify_instance(data, project, KEY)
        if result.status != KEPT:
            raise RuntimeError(f"benchmark instance not kept: {result.reason}")
        return result.data or b""

    return pixl


def make_dicognito() -> Callable[[bytes], bytes]:
    anonymizer = Anonymizer()

    def dicognito(data: bytes) -> bytes:
        ds = dcmread(BytesIO(data))
        anonymizer.anonymize(ds)
        return _write(ds)

    return dicognito


def dicom_anonymizer(data: bytes) -> bytes:
    ds = dcmread(BytesIO(data))
    anonymize_dataset(ds)
    return _write(ds)


def time_run(function: Callable[[bytes], bytes], files: list[bytes]) -> float:
    start = time.perf_counter()
    for data in files:
        function(data)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=10)
    parser.add_argument("--instances", type=int, default=25, help="instances per series (2 series)")
    parser.add_argument("--size", type=int, default=512, help="rows and columns of each image")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    files = corpus(args.studies, args.instances, args.size)
    megabytes = sum(map(len, files)) / 1e6
    print(f"corpus: {len(files)} CT instances, {args.size}x{args.size}, {megabytes:.0f} MB")
    contenders = {
        "floor": floor,
        "pixl": make_pixl(),
        "dicognito": make_dicognito(),
        "dicom_anonymizer": dicom_anonymizer,
    }
    best = {name: float("inf") for name in contenders}
    warnings.simplefilter("ignore")  # the peers warn about values they rewrite
    for function in contenders.values():
        function(files[0])  # warm-up: imports, caches
    for _ in range(args.repeat):
        for name, function in contenders.items():
            best[name] = min(best[name], time_run(function, files))

    rate = {name: len(files) / seconds for name, seconds in best.items()}
    for name in contenders:
        print(f"{name:>17}: {rate[name]:8.1f} instances/s  ({best[name] / len(files) * 1e3:.2f} ms each)")
    pixl_vs_floor = best["pixl"] / best["floor"]
    dicognito_vs_pixl = best["dicognito"] / best["pixl"]
    anonymizer_vs_pixl = best["dicom_anonymizer"] / best["pixl"]
    print(f"pixl takes {pixl_vs_floor:.2f}x the floor's time; dicognito takes {dicognito_vs_pixl:.2f}x "
          f"and dicom-anonymizer {anonymizer_vs_pixl:.2f}x pixl's")
    print(
        f"instances={len(files)} size={args.size} floor_per_s={rate['floor']:.1f} "
        f"pixl_per_s={rate['pixl']:.1f} dicognito_per_s={rate['dicognito']:.1f} "
        f"dicom_anonymizer_per_s={rate['dicom_anonymizer']:.1f} pixl_vs_floor={pixl_vs_floor:.2f} "
        f"dicognito_vs_pixl={dicognito_vs_pixl:.2f} dicom_anonymizer_vs_pixl={anonymizer_vs_pixl:.2f}"
    )


if __name__ == "__main__":
    main()
