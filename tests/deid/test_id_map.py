"""id_old/id_new pairs go to the deid_id_map table, once."""

from __future__ import annotations

from orthanc_plugins.anon.deid.engine import deidentify_instance
from orthanc_plugins.anon.deid.id_map import record_id_map
from pixl_stack.studygen import StudySpec, generate_study, make_patient

from .helpers import KEY


def test_record_id_map_is_idempotent(db, demo) -> None:
    study = generate_study(StudySpec(series=1, instances_per_series=2), make_patient(4))
    results = [deidentify_instance(ds, demo, KEY) for ds in study]
    pairs = [pair for result in results for pair in result.id_pairs]
    assert record_id_map(db, "demo", pairs) == 5  # 1 patient, 1 study, 1 series, 2 instances
    assert record_id_map(db, "demo", pairs) == 0
    db.commit()
    rows = db.execute(
        "SELECT kind, id_old, id_new FROM deid_id_map WHERE project_slug = 'demo' ORDER BY kind, id_old"
    ).fetchall()
    assert len(rows) == 5
    assert ("patient_id", results[0].id_pairs[0].id_old,
            results[0].pseudo_patient_id) in rows
    assert {row[2] for row in rows if row[0] == "sop_instance_uid"} == {r.sop_instance_uid for r in results}
