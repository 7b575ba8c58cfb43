"""cifar10: the generator's format and determinism, the augmentation, the served path."""

from __future__ import annotations

import numpy as np
import pytest

from models import cifar10
from tasks.data.cifar import TEST_FILES, TRAIN_FILES, CifarSource, read_batch_file

STATS = {"train": {"features": {"image": {"min": 0.0, "max": 255.0}}}}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    cifar10.generate(out, 103, 5)
    return out


def test_generator_writes_the_cifar_format(generated):
    src = CifarSource(default_location="")
    files = src.files(str(generated))
    facts = src.validate(files)
    assert facts["train"]["rows"] == 103 and facts["test"]["rows"] == 20
    assert facts["label_names"] == list(cifar10.CLASS_NAMES)
    sizes = [len(read_batch_file(files[n])[0]) for n in TRAIN_FILES]
    assert sizes == [21, 21, 21, 20, 20]
    images, labels = read_batch_file(files[TEST_FILES[0]])
    assert images.shape == (20, 32, 32, 3) and images.dtype == np.uint8
    assert np.bincount(labels.astype(int), minlength=10).tolist() == [2] * 10
    # real colour photos, not flat fills: every image has texture and colour
    assert images.reshape(20, -1).std(axis=1).min() > 10
    assert np.abs(images[..., 0].astype(int) - images[..., 2]).mean() > 5


def test_generator_is_deterministic(generated, tmp_path):
    cifar10.generate(tmp_path, 103, 5)
    for name in (*TRAIN_FILES, *TEST_FILES, "batches.meta"):
        assert (tmp_path / name).read_bytes() == (generated / name).read_bytes(), name
    (tmp_path / "other").mkdir()
    cifar10.generate(tmp_path / "other", 103, 6)
    other = (tmp_path / "other" / "test_batch").read_bytes()
    assert other != (tmp_path / "test_batch").read_bytes()


def test_every_class_has_a_distinct_shape():
    yy, xx = np.mgrid[-1.5:1.5:64j, -1.5:1.5:64j]
    masks = np.stack([cifar10.shape_distance(c, xx, yy) < 0 for c in range(10)])
    for a in range(10):
        for b in range(a + 1, 10):
            # the shapes differ in at least 5% of the square they are drawn in
            assert (masks[a] != masks[b]).mean() > 0.05, (a, b)


def _augment(**kw):
    from tasks.features.layers import image_augmentation_layer

    return image_augmentation_layer()(crop=24, seed=3, **kw)


def test_crop_and_flip_are_drawn_per_image():
    import keras

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((64, 32, 32, 3)).astype("float32")
    out = _augment()(x, training=True).numpy()
    assert out.shape == (64, 24, 24, 3)
    where = []
    for img, o in zip(x, out, strict=True):
        hits = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (0, 1)
                if np.allclose(img[dy:dy + 24, dx:dx + 24][:, ::-1 if flip else 1], o, atol=1e-6)]
        assert len(hits) == 1, "output is not a (flipped) 24x24 window of its input"
        where.append(hits[0])
    assert len({(dy, dx) for dy, dx, _ in where}) > 20  # per image, not one per batch
    assert 10 < sum(flip for *_, flip in where) < 54  # about half flipped


def _checkerboard(n: int) -> np.ndarray:
    """Images whose every 24x24 window (and its mirror) has the same mean and spread."""
    rng = np.random.default_rng(1)
    board = (np.indices((32, 32)).sum(axis=0) % 2).astype("float32")[None, :, :, None]
    return (0.3 + rng.uniform(0.1, 0.4, (n, 1, 1, 3)) * board).astype("float32")


def test_contrast_factor_is_drawn_in_0_3_to_1_per_image():
    x = _checkerboard(256)
    out = _augment(contrast=(0.3, 1.0))(x, training=True).numpy()
    factor = out.std(axis=(1, 2)) / x[:, 4:28, 4:28].std(axis=(1, 2))
    assert factor.min() >= 0.3 - 1e-4 and factor.max() <= 1.0 + 1e-4
    assert factor.min() < 0.35 and factor.max() > 0.95  # the whole range is used
    assert np.allclose(factor, factor[:, :1], atol=1e-4)  # one factor per image


def test_brightness_shift_is_drawn_in_plus_minus_0_2():
    x = _checkerboard(256)
    out = _augment(brightness=0.2)(x, training=True).numpy()
    shift = out.mean(axis=(1, 2, 3)) - x[:, 4:28, 4:28].mean(axis=(1, 2, 3))
    assert np.abs(shift).max() <= 0.2 + 1e-5 and shift.min() < -0.18 and shift.max() > 0.18


def test_hue_shift_keeps_saturation_and_value():
    import tensorflow as tf

    # checkerboards of a saturated colour and grey
    hsv = np.stack(np.broadcast_arrays(np.random.default_rng(3).random((64, 1, 1)), 0.8, 0.7),
                   axis=-1)
    colour = tf.image.hsv_to_rgb(hsv.astype("float32")).numpy()
    board = (np.indices((32, 32)).sum(axis=0) % 2)[None, :, :, None]
    x = np.where(board == 1, colour, 0.5).astype("float32")
    out = _augment(hue=0.05)(x, training=True).numpy()
    before = tf.image.rgb_to_hsv(x[:, 4:28, 4:28]).numpy()
    after = tf.image.rgb_to_hsv(np.clip(out, 0, 1)).numpy()
    # the coloured squares of each checkerboard (the others are grey, without hue)
    coloured = before[..., 1] > 0.05
    for b, a in zip(before, after, strict=True):
        assert np.allclose(np.sort(a[..., 1:].reshape(-1, 2), axis=0),
                           np.sort(b[..., 1:].reshape(-1, 2), axis=0), atol=2e-3)
    hue_before = np.array([np.median(b[..., 0][m]) for b, m in zip(before, coloured,
                                                                   strict=True)])
    hue_after = np.array([np.median(a[..., 0][a[..., 1] > 0.05]) for a in after])
    turn = (hue_after - hue_before + 0.5) % 1.0 - 0.5
    assert np.abs(turn).max() <= 0.05 + 1e-3 and np.abs(turn).max() > 0.04


def test_served_model_does_no_augmentation(tmp_path):
    """The saved, reloaded model: same input -> same output = centre crop + the CNN."""
    import keras

    keras.utils.set_random_seed(0)
    model = cifar10.build_model({"augment": True, "learning_rate": 1e-3}, STATS)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 32, 32, 3)).astype("float32")
    model.fit(x, rng.integers(0, 10, 40), batch_size=20, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    served = keras.models.load_model(tmp_path / "model.keras")
    first, second = served.predict(x, verbose=0), served.predict(x, verbose=0)
    assert np.array_equal(first, second)
    deterministic = served.get_layer("cnn")(x[:, 4:28, 4:28] / 255.0, training=False)
    np.testing.assert_allclose(first, deterministic.numpy(), atol=1e-6)
    # and the training path does augment: the layer is there and active in training
    aug = served.get_layer("augment")
    assert not np.allclose(aug(x / 255.0, training=True).numpy(), x[:, 4:28, 4:28] / 255.0)
    assert served.get_layer("augment").get_config()["contrast"] == [0.3, 1.0]


def test_bf16_network_behind_float32_distortions_saves_and_reloads(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    model = cifar10.build_model({"augment": True, "precision": "mixed_bfloat16"}, STATS)
    cnn = model.get_layer("cnn")
    assert model.get_layer("augment").compute_dtype == "float32"
    assert [lay.compute_dtype for lay in cnn.layers[:-1]] == ["bfloat16"] * (len(cnn.layers) - 1)
    assert cnn.layers[-1].compute_dtype == "float32"  # the softmax
    assert all(w.dtype == "float32" for w in model.weights)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, 40)
    model.fit(x, y, batch_size=20, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    served = keras.models.load_model(tmp_path / "model.keras")
    out = served.predict(x, verbose=0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, model.predict(x, verbose=0), atol=1e-6)


def test_no_augmentation_arm_sees_the_centre_crop():
    import keras

    keras.utils.set_random_seed(0)
    model = cifar10.build_model({"augment": False}, STATS)
    x = np.random.default_rng(2).integers(0, 256, (4, 32, 32, 3)).astype("float32")
    out = model.get_layer("augment")(x / 255.0, training=True).numpy()
    np.testing.assert_allclose(out, x[:, 4:28, 4:28] / 255.0, atol=1e-6)


def test_spec_declares_the_ablation_and_the_book_figure():
    spec = cifar10.SPEC
    assert spec.model.ablation.arms == {"no_augmentation": {"augment": False}}
    assert spec.model.book_figures["test_accuracy"] == 0.7463
    assert spec.params["learning_rate"].default == 1e-3  # the book: 1e-4 (see the docstring)
    assert spec.params["batch_size"].default == 100
