"""Seeded generator of per-person face photos in PubFig's folder layout (default data).

The books' face recogniser is trained on PubFig photos of five public figures, which
cannot be shipped. This module renders a stand-in with the same shape of problem:
``root/<person>/<person>_NNNN.jpg`` colour JPEG photos, one face per photo at varying size
and place, that a real face detector (OpenCV's Haar cascade) must find before the face can
be cropped and recognised.

**Identity.** Each person is a fixed, seeded draw of face parameters: head shape (width,
height, jaw), skin tone, hair colour and style (short, long, fringe, bun), eye spacing,
size and iris colour, eyebrow thickness and arch, nose length and width, mouth width and
lip colour, and for some people a beard. Identities are
separated in several features at once, never in one colour alone.

**Variation per photo** (what makes recognition non-trivial): head size (face width 64 to
118 px in a 256 x 256 to 320 x 288 photo) and position; in-plane tilt up to +-10 degrees;
yaw and pitch up to about +-12% of the face width (features shift and the far side of the
face narrows); directional lighting (side, strength) and exposure; colour temperature;
expression (smile or frown, open mouth, raised brows, eye openness); background (a blurred
crop of one of scikit-image's or scikit-learn's bundled real photos); sensor noise, blur,
one photo in ten in black and white, and JPEG quality 70-95. Parameters drift by small
seeded amounts per photo (makeup, a haircut) so that two photos of one person are never
identical.

**Bad files** (so quarantine is exercised): with ``bad=True`` each person's folder also
gets a photo with no face (background only), a photo with two people side by side and one
``.jpg`` file that is not an image at all. The detector must reject the first two with
"no face" and "2 faces", the decoder the third.

Rendering is plain numpy + OpenCV drawing at 2x resolution, then downsampled (anti-aliased
edges). The same ``(people, per_person, seed)`` gives byte-identical files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PEOPLE = ("Jessica_Alba", "Angelina_Jolie", "Nicole_Kidman", "Sulhyun", "Victoria_Beckham")
SS = 2  # supersampling factor

SKIN = np.array([[236, 200, 172], [224, 172, 140], [198, 140, 104], [170, 120, 88],
                 [244, 214, 190], [210, 160, 120], [146, 102, 74]], float)
HAIR = np.array([[30, 22, 18], [70, 45, 25], [150, 100, 50], [215, 180, 110],
                 [110, 40, 20], [20, 20, 24], [170, 160, 150]], float)
IRIS = np.array([[70, 45, 25], [60, 100, 140], [80, 110, 70], [40, 30, 25]], float)
LIPS = np.array([[190, 90, 90], [160, 70, 80], [200, 110, 110], [140, 60, 60]], float)
CLOTHES = np.array([[30, 30, 40], [200, 200, 210], [150, 30, 40], [40, 70, 140],
                    [90, 110, 60], [230, 190, 60]], float)


@dataclass(frozen=True)
class Identity:
    """Fixed face parameters of one person (see the module docstring)."""

    aspect: float  # head height / width
    jaw: float  # 0 round .. 1 narrow chin
    skin: np.ndarray
    hair: np.ndarray
    hair_style: int  # 0 short, 1 long, 2 fringe, 3 bun
    eye_gap: float  # eye centres' distance / face width
    eye_size: float
    eye_height: float  # eyes' height / face height, from the top
    iris: np.ndarray
    brow_thick: float
    brow_arch: float
    nose_len: float
    nose_w: float
    mouth_w: float
    lips: np.ndarray
    beard: bool
    clothes: np.ndarray


def identities(n: int, seed: int) -> list[Identity]:
    """Seeded, mutually distinct identities: consecutive people differ in every group."""
    rng = np.random.default_rng([seed, 1])
    skins = rng.permutation(len(SKIN))
    hairs = rng.permutation(len(HAIR))
    out = []
    for i in range(n):
        out.append(Identity(
            aspect=float(rng.uniform(1.18, 1.42)),
            jaw=float(rng.uniform(0.1, 0.9)),
            skin=SKIN[skins[i % len(SKIN)]] + rng.normal(0, 6, 3),
            hair=HAIR[hairs[i % len(HAIR)]] + rng.normal(0, 6, 3),
            hair_style=int((i + rng.integers(0, 4)) % 4),
            eye_gap=float(rng.uniform(0.36, 0.48)),
            eye_size=float(rng.uniform(0.95, 1.3)),
            eye_height=float(rng.uniform(0.40, 0.47)),
            iris=IRIS[int(rng.integers(0, len(IRIS)))],
            brow_thick=float(rng.uniform(0.8, 1.6)),
            brow_arch=float(rng.uniform(-0.3, 1.0)),
            nose_len=float(rng.uniform(0.16, 0.26)),
            nose_w=float(rng.uniform(0.14, 0.24)),
            mouth_w=float(rng.uniform(0.30, 0.46)),
            lips=LIPS[int(rng.integers(0, len(LIPS)))] + rng.normal(0, 5, 3),
            beard=bool(rng.random() < 0.25),
            clothes=CLOTHES[int(rng.integers(0, len(CLOTHES)))],
        ))
    return out


def backgrounds() -> list[np.ndarray]:
    """Real photos bundled with scikit-image / scikit-learn (no faces in them)."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    imgs = [data.coffee(), data.rocket(), data.stereo_motorcycle()[0], data.hubble_deep_field()]
    gray = [data.brick(), data.grass(), data.gravel(), data.moon()]
    imgs += [np.stack([g] * 3, -1) for g in gray]
    imgs += list(load_sample_images().images)
    return [np.ascontiguousarray(i[..., :3]).astype(np.uint8) for i in imgs]


def _background(rng: np.random.Generator, bgs: list[np.ndarray], h: int, w: int
                ) -> np.ndarray:
    import cv2

    src = bgs[int(rng.integers(0, len(bgs)))]
    scale = rng.uniform(1.0, 2.0) * max(h / src.shape[0], w / src.shape[1])
    big = cv2.resize(src, (int(src.shape[1] * scale) + 1, int(src.shape[0] * scale) + 1),
                     interpolation=cv2.INTER_LINEAR)
    y = int(rng.integers(0, big.shape[0] - h + 1))
    x = int(rng.integers(0, big.shape[1] - w + 1))
    crop = big[y:y + h, x:x + w].astype(np.float32)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    k = int(rng.integers(1, 5)) * 2 + 1  # depth of field
    crop = cv2.GaussianBlur(crop, (k, k), 0)
    tint = rng.uniform(0.7, 1.2, 3)
    return np.clip(crop * tint, 0, 255)


def _jitter(ident: Identity, rng: np.random.Generator) -> dict[str, Any]:
    """Per-photo drift of the identity plus pose, expression and light."""
    return {
        "aspect": ident.aspect * rng.normal(1, 0.02),
        "skin": ident.skin + rng.normal(0, 5, 3),
        "hair": ident.hair + rng.normal(0, 6, 3),
        "eye_gap": ident.eye_gap * rng.normal(1, 0.02),
        "nose_len": ident.nose_len * rng.normal(1, 0.04),
        "mouth_w": ident.mouth_w * rng.normal(1, 0.04),
        "yaw": rng.uniform(-0.12, 0.12),
        "pitch": rng.uniform(-0.06, 0.06),
        "tilt": rng.uniform(-10, 10),
        "smile": rng.uniform(-0.4, 1.0),
        "mouth_open": max(0.0, rng.uniform(-0.6, 0.6)),
        "brow_raise": rng.uniform(-0.03, 0.05),
        "eye_open": rng.uniform(0.6, 1.1),
        "light_dir": rng.uniform(-1, 1),
        "light": rng.uniform(0.0, 0.45),
    }


def _draw_face(canvas: np.ndarray, ident: Identity, p: dict[str, Any], cx: float, cy: float,
               fw: float) -> None:
    """Draw one head (and shoulders) on a float RGB canvas at supersampled coordinates."""
    import cv2

    h, w = canvas.shape[:2]
    fh = fw * p["aspect"]
    yaw, pitch = p["yaw"], p["pitch"]
    layer = np.zeros_like(canvas)
    alpha = np.zeros((h, w), np.float32)

    def ell(img: np.ndarray, c: tuple[float, float], axes: tuple[float, float], color: Any,
            angle: float = 0, a0: float = 0, a1: float = 360, thick: int = -1) -> None:
        cv2.ellipse(img, (int(c[0]), int(c[1])), (max(1, int(axes[0])), max(1, int(axes[1]))),
                    angle, a0, a1, color, thick, cv2.LINE_AA)

    # shoulders and neck
    ell(layer, (cx, cy + fh * 1.25), (fw * 1.25, fh * 0.55), tuple(ident.clothes.tolist()))
    ell(alpha, (cx, cy + fh * 1.25), (fw * 1.25, fh * 0.55), 1.0)
    neck = np.array([[cx - fw * 0.22, cy + fh * 0.3], [cx + fw * 0.22, cy + fh * 0.3],
                     [cx + fw * 0.25, cy + fh * 0.85], [cx - fw * 0.25, cy + fh * 0.85]],
                    np.int32)
    cv2.fillConvexPoly(layer, neck, tuple((p["skin"] * 0.8).tolist()), cv2.LINE_AA)
    cv2.fillConvexPoly(alpha, neck, 1.0, cv2.LINE_AA)
    # hair behind the head
    if ident.hair_style == 1:  # long
        ell(layer, (cx, cy + fh * 0.15), (fw * 0.62, fh * 0.75), tuple(p["hair"].tolist()))
        ell(alpha, (cx, cy + fh * 0.15), (fw * 0.62, fh * 0.75), 1.0)
    if ident.hair_style == 3:  # bun
        ell(layer, (cx, cy - fh * 0.55), (fw * 0.22, fh * 0.16), tuple(p["hair"].tolist()))
        ell(alpha, (cx, cy - fh * 0.55), (fw * 0.22, fh * 0.16), 1.0)
    # head: upper ellipse + jaw, shaded
    head = np.zeros((h, w), np.float32)
    ell(head, (cx, cy), (fw / 2, fh / 2), 1.0)
    jaw_w = fw / 2 * (1 - 0.35 * ident.jaw)
    ell(head, (cx, cy + fh * 0.12), (jaw_w, fh * 0.42), 1.0)
    # ears
    for side in (-1, 1):
        ell(head, (cx + side * fw * (0.5 - 0.02 * side * yaw * 10), cy + fh * 0.02),
            (fw * 0.07, fh * 0.1), 1.0)
    # shading is computed only in the head's box (it is zero elsewhere)
    y0, y1 = max(0, int(cy - fh * 0.6)), min(h, int(cy + fh * 0.62) + 1)
    x0, x1 = max(0, int(cx - fw * 0.7)), min(w, int(cx + fw * 0.7) + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = (xx - cx - yaw * fw) / (fw / 2), (yy - cy) / (fh / 2)
    shade = 1.05 - 0.18 * (dx ** 2 + 0.6 * dy ** 2)  # rounded forehead and cheeks
    shade += p["light"] * p["light_dir"] * np.clip(dx, -1.2, 1.2) * 0.5
    # soft shadows of a real face's relief: eye sockets, the sides of the nose, under the
    # lower lip (the contrasts a Haar cascade's features measure)
    ex0 = cx + yaw * fw
    ey0 = cy - fh / 2 + fh * ident.eye_height + pitch * fh
    for side in (-1, 1):
        gx = ex0 + side * fw * p["eye_gap"] / 2 * (1 - 0.8 * side * yaw)
        shade -= 0.34 * np.exp(-(((xx - gx) / (fw * 0.15)) ** 2
                                 + ((yy - ey0) / (fw * 0.10)) ** 2))
        shade -= 0.12 * np.exp(-(((xx - ex0 - side * fw * 0.1) / (fw * 0.05)) ** 2
                                 + ((yy - ey0 - fh * 0.12) / (fh * 0.08)) ** 2))
    # specular highlights (added, not scaled: they stay bright on dark skin too): forehead,
    # the bridge of the nose between the eyes, cheekbones
    spec = 30 * np.exp(-(((xx - ex0) / (fw * 0.18)) ** 2 + ((yy - ey0 + fh * 0.2) / (fh * 0.1))
                          ** 2))
    spec += 34 * np.exp(-(((xx - ex0) / (fw * 0.05)) ** 2 + ((yy - ey0 - fh * 0.05) / (fh * 0.1))
                           ** 2))
    for side in (-1, 1):
        spec += 22 * np.exp(-(((xx - ex0 - side * fw * 0.24) / (fw * 0.09)) ** 2
                              + ((yy - ey0 - fh * 0.15) / (fh * 0.06)) ** 2))
    skin = p["skin"][None, None, :] * shade[..., None] + spec[..., None]
    hw = head[y0:y1, x0:x1, None]
    win = layer[y0:y1, x0:x1]
    layer[y0:y1, x0:x1] = np.where(hw > 0, skin * hw + win * (1 - hw), win)
    alpha = np.maximum(alpha, head)
    # hair on top
    hc = tuple(p["hair"].tolist())
    top = cy - fh * 0.18
    ell(layer, (cx, top), (fw * 0.54, fh * 0.36), hc, 0, 180, 360)
    ell(alpha, (cx, top), (fw * 0.54, fh * 0.36), 1.0, 0, 180, 360)
    if ident.hair_style == 2:  # fringe
        ell(layer, (cx + fw * 0.05, top - fh * 0.03), (fw * 0.44, fh * 0.06), hc, -8)
        ell(alpha, (cx + fw * 0.05, top - fh * 0.03), (fw * 0.44, fh * 0.06), 1.0, -8)

    fx = cx + yaw * fw  # features move with the head's turn
    ey = cy - fh / 2 + fh * ident.eye_height + pitch * fh
    gap = fw * p["eye_gap"]
    er = fw * 0.085 * ident.eye_size
    dark = p["skin"] * 0.55
    for side in (-1, 1):
        squeeze = 1 - 0.8 * side * yaw  # far eye narrows when the head turns
        ex = fx + side * gap / 2 * squeeze
        # eye socket shadow (what a Haar cascade keys on: dark eye band, light bridge)
        ell(layer, (ex, ey - er * 0.15), (er * 1.9 * squeeze, er * 1.25),
            tuple((p["skin"] * 0.80).tolist()))
        ell(layer, (ex, ey), (er * 1.45 * squeeze, er * 0.9), tuple((p["skin"] * 0.62).tolist()))
        sclera = np.minimum(p["skin"] * 0.45 + 150, 235)  # in a face's shadow, not paper white
        ell(layer, (ex, ey), (er * squeeze, er * 0.5 * p["eye_open"]), tuple(sclera.tolist()))
        ell(layer, (ex + yaw * er, ey), (er * 0.45, er * 0.45 * min(1, p["eye_open"] + 0.2)),
            tuple(ident.iris.tolist()))
        ell(layer, (ex + yaw * er, ey), (er * 0.2, er * 0.2), (10, 10, 10))
        ell(layer, (ex, ey), (er * squeeze, er * 0.6 * p["eye_open"]), (40, 30, 30), 0, 180,
            360, max(1, int(er * 0.18)))
        by = ey - er * (1.5 + 6 * p["brow_raise"])
        bt = max(2, int(er * 0.5 * ident.brow_thick))
        ell(layer, (ex, by + er * 0.4 * ident.brow_arch), (er * 1.5 * squeeze, er * 0.6),
            tuple((p["hair"] * 0.6 + 5).tolist()), 0, 195, 345, bt)
    # nose: bridge highlight, side shadow, nostrils
    nl, nw = fh * p["nose_len"], fw * ident.nose_w
    ny = ey + nl
    cv2.line(layer, (int(fx + nw * 0.3), int(ey + er)), (int(fx + nw * 0.4), int(ny - nw * 0.2)),
             tuple((p["skin"] * 0.78).tolist()), max(1, int(nw * 0.12)), cv2.LINE_AA)
    ell(layer, (fx, ny - nw * 0.1), (nw * 0.35, nw * 0.3), tuple((p["skin"] * 1.05).tolist()))
    ell(layer, (fx, ny + nw * 0.12), (nw * 0.5, nw * 0.14), tuple((p["skin"] * 0.7).tolist()))
    for side in (-1, 1):
        ell(layer, (fx + side * nw * 0.25, ny), (nw * 0.13, nw * 0.08), tuple(dark.tolist()))
    # mouth with expression
    my = ny + (fh / 2 + cy + pitch * fh - ny) * 0.42
    mw = fw * p["mouth_w"] / 2
    smile, op = p["smile"], p["mouth_open"]
    ell(layer, (fx, my), (mw, mw * (0.22 + 0.4 * op)), tuple(ident.lips.tolist()))
    if op > 0.05:
        ell(layer, (fx, my), (mw * 0.8, mw * 0.35 * op), (60, 20, 25))
    if smile >= 0:
        ell(layer, (fx, my - mw * 0.5 * smile), (mw, mw * 0.5 * smile + 1), (90, 40, 45), 0,
            10, 170, max(1, int(mw * 0.08)))
    else:
        ell(layer, (fx, my + mw * 0.5), (mw * 0.9, -mw * 0.4 * smile + 1), (90, 40, 45), 0,
            190, 350, max(1, int(mw * 0.08)))
    if ident.beard:
        beard = np.zeros((h, w), np.float32)
        ell(beard, (cx, my - mw * 0.3), (jaw_w * 1.02, fh * 0.5 + cy - my + fh * 0.12),
            1.0, 0, 0, 180)
        ell(beard, (fx, my), (mw * 1.05, mw * 0.4), 0.0)
        mask = (beard * head)[..., None] * 0.7
        layer = layer * (1 - mask) + p["hair"][None, None, :] * mask
    a = alpha[..., None]
    canvas[:] = canvas * (1 - a) + layer * a


def render_photo(rng: np.random.Generator, people: list[Identity], bgs: list[np.ndarray],
                 faces: int = 1) -> np.ndarray:
    """One RGB uint8 photo holding ``faces`` people (0, 1 or 2)."""
    import cv2

    h = int(rng.integers(256, 321)) // 4 * 4
    w = int(rng.integers(256, 289)) // 4 * 4
    canvas = _background(rng, bgs, h * SS, w * SS)
    if faces == 1:
        fw = rng.uniform(64, 118) * SS
        cx = rng.uniform(0.5 * w * SS - 0.15 * w * SS, 0.5 * w * SS + 0.15 * w * SS)
        cy = rng.uniform(0.38, 0.52) * h * SS
        ident = people[0]
        p = _jitter(ident, rng)
        _draw_face(canvas, ident, p, cx, cy, fw)
        tilt = p["tilt"]
    else:
        tilt = 0.0
        fw = rng.uniform(62, 76) * SS
        for k in range(faces):
            ident = people[k]
            p = _jitter(ident, rng)
            p["yaw"] *= 0.3
            cx = (0.27 + 0.46 * k) * w * SS + rng.uniform(-4, 4) * SS
            _draw_face(canvas, ident, p, cx, rng.uniform(0.38, 0.48) * h * SS, fw)
    if faces == 1 and abs(tilt) > 0.5:
        m = cv2.getRotationMatrix2D((cx, cy), tilt, 1.0)
        canvas = cv2.warpAffine(canvas, m, (w * SS, h * SS), borderMode=cv2.BORDER_REFLECT)
    img = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA)
    img = img * rng.uniform(0.8, 1.15) * rng.uniform(0.88, 1.12, 3)  # exposure, white balance
    if rng.random() < 0.1:  # a black-and-white photo
        img = np.repeat(img @ np.array([[0.299], [0.587], [0.114]]), 3, axis=2)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (3, 3), rng.uniform(0.3, 1.0))
    img = img + rng.normal(0, rng.uniform(1, 5), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """Baseline JPEG bytes of an RGB image (PIL / libjpeg-turbo, 4:2:0)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=int(quality))
    return buf.getvalue()


def generate(root: Path, per_person: int = 56, seed: int = 0, people: int = 5,
             bad: bool = True) -> dict[str, Any]:
    """Write ``root/<person>/<person>_NNNN.jpg`` photos; return what was written.

    Args:
        root: Output directory (created).
        per_person: Single-face photos per person.
        seed: Seed of identities and photos.
        people: Number of people (at most ``len(PEOPLE)``).
        bad: Also write, per person, one photo with no face, one with two faces and one
            non-image ``.jpg``, among the first 20 file names.

    Returns:
        ``{"people": [...], "good": n, "bad": {file: reason}}``.

    """
    root = Path(root)
    if not 1 <= people <= len(PEOPLE):
        raise ValueError(f"people must lie in [1, {len(PEOPLE)}], got {people}")
    names = PEOPLE[:people]
    idents = identities(people, seed)
    bgs = backgrounds()
    expected_bad: dict[str, str] = {}
    for i, name in enumerate(names):
        rng = np.random.default_rng([seed, 2, i])
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        kinds = [1] * per_person
        if bad:  # early in name order, so a per-class cap does not skip them
            slots = rng.choice(max(3, min(20, per_person + 1)), 3, replace=False)
            for pos, kind in zip(sorted(slots), rng.permutation([0, 2, -1]), strict=True):
                kinds.insert(int(pos), int(kind))
        for k, faces in enumerate(kinds):
            path = folder / f"{name}_{k:04d}.jpg"
            if faces < 0:
                path.write_bytes(b"<html><body>404 Not Found</body></html>\n")
                expected_bad[str(path.relative_to(root))] = "not an image"
                continue
            pair = [idents[i], idents[(i + 1) % people]] if faces == 2 else [idents[i]]
            img = render_photo(rng, pair, bgs, faces)
            path.write_bytes(encode_jpeg(img, int(rng.integers(70, 96))))
            if faces != 1:
                expected_bad[str(path.relative_to(root))] = ("no face" if faces == 0
                                                             else f"{faces} faces")
    return {"people": list(names), "good": per_person * people, "bad": expected_bad}
