"""faces end to end on tiny generated photos: quarantine reasons, plots, the books' request.

6 generated photos per person and 3 bad files each (no face, two faces, not an image);
the books' REST request, a base64 JPEG of a face crop, answers per-person probabilities
and a name; batch scoring of a folder of photos answers the same. The real figure is
reached by `mlp run faces` (README).
"""

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime

import httpx
import pytest

from tests.conftest import serving

pytestmark = pytest.mark.slow


def test_faces_quarantines_bad_photos_registers_and_answers_the_books_request(airflow_db,
                                                                              own_mlflow,
                                                                              tmp_path):
    from skimage import data as skdata

    from models._face_photos import PEOPLE, encode_jpeg
    from tasks.core.run import RunLayout, run_key
    from tasks.data.faces import FaceCropper
    from tasks.orchestration.dag_factory import build_dag
    from tasks.spec import catalog
    from tasks.tracking import configure

    spec = catalog.get("faces")
    # Tiny data cannot reach the real bar; 3 bad files of 9 per person is more than real
    # folders have.
    spec = replace(spec, gate=replace(spec.gate, min_value=-1e9),
                   preprocess=replace(spec.preprocess, max_bad_fraction=0.6))
    when = datetime(2026, 8, 1, tzinfo=UTC)
    conf = {**spec.smoke.params, "source_dir": spec.smoke.source}
    dr = build_dag(spec).test(logical_date=when, run_conf=conf)
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    assert set(states.values()) == {"success"}, states

    client = configure()
    mv = client.get_model_version_by_alias("faces", "champion")
    artifacts = {a.path for a in client.list_artifacts(mv.run_id, "plots")}
    assert {"plots/confusion_matrix.png", "plots/examples_per_class.png"} <= artifacts
    quarantine = RunLayout.of("faces", run_key(when)).quarantine_file
    reasons = {json.loads(line)["reason"].split(" (")[0]
               for line in quarantine.read_text().splitlines()}
    assert {"no face", "2 faces", "not an image"} <= reasons, reasons

    with serving(("faces",)) as base:
        crop = FaceCropper()(encode_jpeg(skdata.astronaut(), 95))
        b64 = base64.b64encode(encode_jpeg(crop, 90)).decode()
        r = httpx.post(f"{base}/v1/models/faces:predict",
                       json={"instances": [{"image": {"b64": b64}}]}, timeout=30)
        assert r.status_code == 200, r.text
        face = r.json()["predictions"]
        assert len(face[0]["probabilities"]) == 5 and face[0]["class_name"] in PEOPLE
        bad = httpx.post(f"{base}/v1/models/faces:predict",
                         json={"instances": [{"image": {"b64": "%%% not base64"}}]})
        assert bad.status_code == 400 and "base64" in bad.json()["error"]

        # `mlp score faces <folder of JPEGs>`: one person's photos (with the bad files);
        # each is checked and cropped as in training and sent as the books' JPEG crop.
        import shutil

        import numpy as np
        import pyarrow.parquet as pq

        from models.faces import FaceCropInput
        from tasks.data.faces import FaceCropDecoder
        from tasks.steps.score import score

        photos = tmp_path / "photos"
        photos.mkdir()
        for key, path in spec.source.files(spec.smoke.source).items():
            if key.startswith(f"{PEOPLE[0]}/"):
                shutil.copy(path, photos / key.split("/", 1)[1])
        result = score(spec, str(photos), out_dir=tmp_path / "scored")
        table = pq.read_table(tmp_path / "scored" / "predictions").to_pandas()
        assert list(table.columns) == ["file", "probabilities", "class_name", "model",
                                       "version"]
        assert result.rows == len(table) >= 4 and result.quarantined >= 2
        reasons = {json.loads(line)["reason"].split(" (")[0] for line in
                   (tmp_path / "scored" / "quarantine.jsonl").read_text().splitlines()}
        assert {"no face", "not an image"} <= reasons, reasons
        first = table.sort_values("file")[:3]
        crops = [FaceCropDecoder().decode(f) for f in first["file"]]
        answers = httpx.post(f"{base}/v1/models/faces:predict", json={"instances": [
            {"image": {"b64": base64.b64encode(jpeg).decode()}}
            for jpeg in FaceCropInput().encode(np.stack(crops))]}, timeout=30).json()
        np.testing.assert_allclose(np.stack(first["probabilities"].map(np.stack)),
                                   [a["probabilities"] for a in answers["predictions"]],
                                   atol=1e-5)
        assert first["class_name"].tolist() == [a["class_name"] for a in
                                                answers["predictions"]]
