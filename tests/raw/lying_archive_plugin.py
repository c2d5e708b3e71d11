"""The C-MOVE SCP of a lying archive: an Orthanc whose C-FIND answers are its own
(true counts) and whose C-MOVE answers success whatever it sent.

The mode is read from the file named by `LyingArchive.ModeFile` at every C-MOVE:
- `short`: a study- or series-level C-MOVE sends every matching instance but the
  last one; an instance-level C-MOVE (what raw asks for the missing ones) is
  honoured;
- `none`: nothing is ever sent;
- `honest`: everything asked for is sent.
Orthanc names the instance level INSTANCE. Each C-MOVE logs one line,
`lying archive: <level> <mode> sent N of M`, which the test reads from the log:
what the archive did, not what raw thought.

Runs inside the archive's Orthanc (plugin 4.0's `RegisterMoveCallback`, one
sub-operation per C-MOVE), not in PIXL's code.
"""

import json
from pathlib import Path

import orthanc

MODE_FILE = Path(json.loads(orthanc.GetConfiguration())["LyingArchive"]["ModeFile"])


def _modality_for(aet: str) -> str:
    modalities = json.loads(orthanc.RestApiGet("/modalities?expand"))
    return next(name for name, entry in modalities.items() if entry["AET"] == aet)


def _instances(request: dict) -> list[str]:
    query = {"StudyInstanceUID": request["StudyInstanceUID"]}
    if request["SeriesInstanceUID"]:
        query["SeriesInstanceUID"] = request["SeriesInstanceUID"]
    found = []
    for sop in (request["SOPInstanceUID"].split("\\") if request["SOPInstanceUID"] else [""]):
        body = {"Level": "Instance", "Query": dict(query, **({"SOPInstanceUID": sop} if sop else {}))}
        found += json.loads(orthanc.RestApiPost("/tools/find", json.dumps(body)))
    return sorted(found, key=lambda i: json.loads(orthanc.RestApiGet(f"/instances/{i}"))["MainDicomTags"]["SOPInstanceUID"])


def on_move(**request) -> None:
    mode = MODE_FILE.read_text().strip()
    level = request["Level"].upper()
    instances = _instances(request)
    if mode == "none":
        sent = []
    elif mode == "short" and level not in ("IMAGE", "INSTANCE"):
        sent = instances[:-1]
    else:
        sent = instances
    if sent:
        orthanc.RestApiPost(f"/modalities/{_modality_for(request['TargetAET'])}/store",
                            json.dumps({"Resources": sent, "Synchronous": True}))
    orthanc.LogWarning(f"lying archive: {level} {mode} sent {len(sent)} of {len(instances)}")


orthanc.RegisterMoveCallback(on_move)
