"""Face detection and cropping, the generated photos, quarantine, and training/serving parity."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest

from tasks.data.media import MediaError

# The people of the generated folders, as preprocessing records them (sorted folder names).
NAMES = sorted(("Jessica_Alba", "Angelina_Jolie", "Nicole_Kidman", "Sulhyun",
                "Victoria_Beckham"))
STATS = {"classes": {"names": NAMES, "origin": "folders"}}


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, dict]:
    """Generated photo folders: 5 people x (6 single-face photos + 3 bad files)."""
    from models._face_photos import generate

    root = tmp_path_factory.mktemp("faces")
    return root, generate(root, per_person=6, seed=3)


def test_cascades_come_from_the_opencv_wheel():
    import cv2

    from tasks.data.faces import CASCADE, cascade_file

    path = cascade_file()
    assert path.name == CASCADE and path.is_file()
    assert Path(cv2.__file__).parent in path.parents  # shipped in the wheel, not downloaded
    with pytest.raises(RuntimeError, match="opencv-python-headless 4.x"):
        cascade_file("haarcascade_no_such_thing.xml")


def test_detector_finds_and_crops_the_one_face_of_a_real_photo():
    """scikit-image's astronaut photo (Eileen Collins): exactly one face, cropped 96 x 96."""
    from skimage import data

    from tasks.data.faces import FaceCropper, detect_faces

    img = data.astronaut()  # 512 x 512 RGB; her face lies around x 180-275, y 65-165
    boxes = detect_faces(img)
    assert len(boxes) == 1
    x, y, w, h = boxes[0]
    assert 170 <= x <= 200 and 55 <= y <= 85 and 80 <= w <= 115 and w == h
    crop = FaceCropper()(_png(img))
    assert crop.shape == (96, 96, 3) and crop.dtype == np.uint8
    want = img[y:y + h, x:x + w]
    # the crop is that box, resized: same mean colour, and a face's contrast (not a flat patch)
    assert np.abs(crop.reshape(-1, 3).mean(0) - want.reshape(-1, 3).mean(0)).max() < 3
    assert crop.std() > 30
    # a photo without a face (scikit-image's coffee cup) is refused with the reason
    with pytest.raises(MediaError, match="^no face$"):
        FaceCropper()(_png(data.coffee()))


def test_two_faces_and_non_images_are_refused():
    from skimage import data

    from tasks.data.faces import FaceCropper

    face = data.astronaut()[40:200, 150:310]
    pair = np.concatenate([face, face[:, ::-1]], axis=1)
    with pytest.raises(MediaError, match="^2 faces$"):
        FaceCropper()(_png(pair))
    with pytest.raises(MediaError, match="not an image"):
        FaceCropper()(b"<html>404</html>")
    with pytest.raises(MediaError, match="not an image"):
        FaceCropper()(b"")


def test_generator_is_seeded_and_its_faces_are_found_by_the_detector(photos, tmp_path):
    from models._face_photos import PEOPLE, generate
    from tasks.data.faces import FaceCropper

    root, written = photos
    again = generate(tmp_path / "again", per_person=6, seed=3)
    assert again == written
    for name in PEOPLE:
        for a in sorted((root / name).iterdir()):
            assert a.read_bytes() == (tmp_path / "again" / name / a.name).read_bytes()
    found = total = 0
    for path in sorted(root.glob("*/*.jpg")):
        if str(path.relative_to(root)) in written["bad"]:
            continue
        total += 1
        try:
            FaceCropper()(path.read_bytes())
            found += 1
        except MediaError:
            pass
    assert total == 30 and found / total >= 0.8, (found, total)


def test_bad_photos_are_quarantined_with_their_reason_and_raw_files_untouched(photos):
    from models.faces import SOURCE

    root, written = photos
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.glob("*/*")}
    files = SOURCE.files(str(root))
    batches = [b for p in SOURCE.partitions() for b in SOURCE.read_batches(files, p, 64)]
    bad = {b["value"]: b["reason"] for batch in batches for b in batch["_bad"]}
    for rel, reason in written["bad"].items():
        if reason == "not an image":
            assert bad[rel].startswith("not an image"), (rel, bad.get(rel))
        else:
            assert bad[rel] == reason, (rel, bad.get(rel))
    # each person has 15 good photos at most here, all kept (fewer than the 55 cap)
    images = np.concatenate([b["image"] for b in batches])
    assert images.shape[1:] == (96, 96, 3) and images.dtype == np.uint8
    assert len(images) + len(bad) == 45
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.glob("*/*")}
    assert after == before


def _models(photos):
    """An (untrained) faces CNN, its served twin and some training-path crops."""
    import keras

    from models.faces import SPEC, build_model
    from tasks import objectives
    from tasks.data.faces import FaceCropper, decode_photo, detect_faces
    from tasks.steps.train import serving_model

    root, written = photos
    keras.utils.set_random_seed(0)
    trained = build_model({"learning_rate": 1e-3}, STATS)
    served = serving_model(SPEC, trained, STATS, objectives.get("classification"), {})
    rgbs, crops = [], []
    for path in sorted(root.glob("*/*.jpg")):
        if str(path.relative_to(root)) in written["bad"]:
            continue
        try:
            crops.append(FaceCropper()(path.read_bytes()))
        except MediaError:
            continue
        rgb = decode_photo(path.read_bytes())
        rgbs.append((rgb, detect_faces(rgb)[0]))
        if len(crops) == 4:
            break
    return trained, served, np.stack(crops), rgbs


def test_served_model_computes_what_training_computed(photos, tmp_path):
    """Parity: training path (detect, crop, resize, stored uint8) vs the served model on
    what the books' client sends (the encoded crop)."""
    import keras
    import tensorflow as tf

    from models._face_photos import encode_jpeg
    from tasks.features.images import resize_crop
    from tasks.features.layers import register_all

    trained, served, crops, rgbs = _models(photos)
    want = trained(crops.astype(np.float32), training=False).numpy()

    # lossless crop as sent -> exactly the training input
    out = served(tf.constant([_png(c) for c in crops]))
    np.testing.assert_allclose(out["probabilities"].numpy(), want, rtol=0, atol=1e-6)
    names = [n.decode() for n in out["class_name"].numpy()]
    assert names == [NAMES[i] for i in want.argmax(1)]

    # a crop sent at its native size is resized inside the model exactly as in training
    native = [rgb[y:y + h, x:x + w] for rgb, (x, y, w, h) in rgbs]
    assert all(n.shape[0] != 96 for n in native)
    resized = np.stack([np.asarray(resize_crop(n[None], 96))[0] for n in native])
    np.testing.assert_array_equal(resized, crops)
    out = served(tf.constant([_png(n) for n in native]))
    np.testing.assert_allclose(out["probabilities"].numpy(), want, rtol=0, atol=1e-6)

    # the books' request: a JPEG of the crop (lossy: close, not equal)
    jpegs = [encode_jpeg(c, 95) for c in crops]
    decoded = np.stack([tf.io.decode_jpeg(j, channels=3).numpy() for j in jpegs])
    assert np.abs(decoded.astype(int) - crops).mean() < 3
    out = served(tf.constant(jpegs))
    np.testing.assert_allclose(out["probabilities"].numpy(),
                               trained(decoded.astype(np.float32), training=False).numpy(),
                               rtol=0, atol=1e-6)

    # saved and loaded as the registry does (custom layers registered), same answers
    served.save(tmp_path / "model.keras")
    register_all()
    again = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(again(tf.constant(jpegs))["probabilities"].numpy(),
                               out["probabilities"].numpy(), rtol=0, atol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError):
        served(tf.constant([b"not an image"]))


def test_rest_answers_the_books_base64_jpeg_request(photos):
    """POST {"instances": [{"image": {"b64": JPEG}}]} -> probabilities and names; 400s."""
    from starlette.testclient import TestClient

    from models._face_photos import encode_jpeg
    from tasks.serving.app import create_app
    from tasks.serving.signature import signature_of
    from tasks.serving.store import ModelStore, Served

    _, served_model, crops, _ = _models(photos)
    sig = signature_of(served_model)
    assert (sig.input_name, sig.input_dtype, sig.input_shape) == ("image", "string", ())

    def predict(batch):
        import tensorflow as tf

        out = served_model(tf.constant(batch))
        return {"probabilities": out["probabilities"].numpy(),  # as load_version returns
                "class_name": np.array([b.decode() for b in out["class_name"].numpy()],
                                       dtype=object)}

    store = ModelStore(poll_seconds=3600)
    store._champions = {"faces": Served("faces", "1", sig, predict)}
    client = TestClient(create_app(store=store))  # no lifespan: no registry polling
    b64 = base64.b64encode(encode_jpeg(crops[0], 90)).decode()
    r = client.post("/v1/models/faces:predict",
                    json={"instances": [{"image": {"b64": b64}}, {"image": {"b64": b64}}]})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 2 and set(preds[0]) == {"probabilities", "class_name"}
    p = np.asarray(preds[0]["probabilities"])
    assert p.shape == (5,) and abs(p.sum() - 1) < 1e-5
    assert preds[0]["class_name"] == NAMES[int(p.argmax())]

    r = client.post("/v1/models/faces:predict",
                    json={"instances": [{"image": {"b64": "not base64!!"}}]})
    assert r.status_code == 400 and "invalid base64" in r.json()["error"]
    r = client.post("/v1/models/faces:predict", json={"instances": [
        {"image": {"b64": base64.b64encode(b"plain text, no image").decode()}}]})
    assert r.status_code == 400 and "rejected the input" in r.json()["error"]
