"""Pascal VOC XML box annotations as a data source (the layout of VOC and of the pets data).

Two folder layouts are recognised:

- **Pascal VOC**: ``JPEGImages/<id>.jpg``, ``Annotations/<id>.xml`` and the split lists
  ``ImageSets/Main/trainval.txt`` (or ``train.txt`` + ``val.txt``) and
  ``ImageSets/Main/test.txt``;
- **Oxford-IIIT Pets** (the books' Object Detection chapter): ``images/<id>.jpg``,
  ``annotations/xmls/<id>.xml``, ``annotations/trainval.txt`` and ``annotations/test.txt``.

A split list holds one image id per line (the first token; the pets lists add class
columns after it). ``trainval`` becomes the ``train`` partition (the validation split is
carved from it), ``test`` the ``test`` partition.

**Classes come from the data** unless the use case fixes them (``class_names``): from a
label map (the Object Detection API's ``label_map.pbtxt`` or ``<name>_label_map.pbtxt``,
e.g. the pets example's ``pet_label_map.pbtxt``, at the folder's root or in
``annotations/``; :mod:`tasks.data.classes`), label id = its id; without one, the names
the annotations use, collected over every listed image and sorted (ids 1..N in that
order). They are recorded with the run (ingest facts, ``stats.json``, the records'
feature spec) and name ``detection_classes`` in the served model's metadata and card.

**The pets layout as the Oxford-IIIT Pet data ships it**: its XML ``<name>`` is only the
species (``cat``/``dog``); the class is the breed in the file name (``Abyssinian_12`` ->
``Abyssinian``), as the Object Detection API's ``create_pet_tf_record.py`` takes it, and
as its ``pet_label_map.pbtxt`` lists them. Pets has boxes for its trainval images only:
test-list ids without an annotation are left out (counted in the ingest facts, not
quarantined), and when no test id has one, the ``test`` partition is a seeded 30% of the
annotated trainval images (``create_pet_tf_record.py`` splits trainval 70/30 too).

Each annotation is VOC XML: ``<annotation><filename/><size><width/><height/><depth/>
</size><object><name/><truncated/><difficult/><bndbox><xmin/><ymin/><xmax/><ymax/>
</bndbox></object>...</annotation>``, with VOC's 1-based pixel coordinates (the
Object Detection API's ``create_pascal_tf_record.py`` divides them by the image size as
they are; so does this source).

Problems are per image and go to the quarantine file with the file and the reason; the
image is left out whole (a half-labelled image would teach the detector that an
unlabelled object is background):

- the XML is malformed, or lacks a size, a box coordinate or a class name;
- an image id of a split list has no annotation or no image file;
- the image is not a readable JPEG/PNG, or its size differs from the annotation's;
- a box lies outside the image or is empty (``xmin >= xmax``);
- a class name is not one of the classes (the spec's or the label map's);
- no objects at all.

A missing split list or folder fails the ingest with a message naming it.
"""

from __future__ import annotations

import contextlib
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from tasks.data.classes import LABEL_MAP_SUFFIX, ClassList, read_label_map
from tasks.data.detection import AnnotatedImage
from tasks.data.sources import GENERATED, SourceError, generated_location

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LAYOUTS = {
    "voc": {"annotations": "Annotations", "images": "JPEGImages",
            "train": ("ImageSets/Main/trainval.txt",
                      ("ImageSets/Main/train.txt", "ImageSets/Main/val.txt")),
            "test": ("ImageSets/Main/test.txt",)},
    "pets": {"annotations": "annotations/xmls", "images": "images",
             "train": ("annotations/trainval.txt",), "test": ("annotations/test.txt",)},
}
PARTITIONS = ("train", "test")
LIST_PARTITION = {"trainval": "train", "train": "train", "val": "train", "test": "test"}
LABEL_MAP_FOLDERS = ("", "annotations")  # where a label map is looked for
PETS_TEST_FRACTION = 0.3  # of annotated trainval, when the pets' test list has no boxes
_PET_BREED = re.compile(r"^(.+?)_\d+$")  # create_pet_tf_record.py's breed-from-file-name


def pet_breed(image_id: str) -> str:
    """The pets' class of an image: its file name without the trailing number."""
    m = _PET_BREED.match(image_id)
    if m is None:
        raise AnnotationError(f"pets image id {image_id!r} is not <breed>_<number>")
    return m.group(1)


class AnnotationError(ValueError):
    """One image's annotation is unusable; the message is the quarantine reason."""


def _text(node: ET.Element, path: str) -> str:
    found = node.find(path)
    if found is None or found.text is None or not found.text.strip():
        raise AnnotationError(f"no <{path}>")
    return found.text.strip()


def _number(node: ET.Element, path: str) -> float:
    raw = _text(node, path)
    try:
        return float(raw)
    except ValueError:
        raise AnnotationError(f"<{path}> is not a number: {raw!r}") from None


def _flag(node: ET.Element, path: str) -> int:
    """An optional 0/1 flag (VOC's ``difficult``, ``truncated``); absent or empty is 0."""
    found = node.find(path)
    if found is None or not (found.text or "").strip():
        return 0
    return int(_number(node, path) != 0)


def parse_annotation(xml: bytes) -> dict[str, Any]:
    """A VOC XML annotation as ``{filename, width, height, objects: [{name, box, ...}]}``.

    Boxes are VOC pixel coordinates ``(xmin, ymin, xmax, ymax)`` as written.

    Raises:
        AnnotationError: Malformed XML or a missing/non-numeric field (the reason).

    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise AnnotationError(f"malformed XML: {exc}") from None
    if root.tag != "annotation":
        raise AnnotationError(f"root element is <{root.tag}>, not <annotation>")
    size = root.find("size")
    if size is None:
        raise AnnotationError("no <size>")
    objects = []
    for i, obj in enumerate(root.findall("object")):
        try:
            box = tuple(_number(obj, f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax"))
            objects.append({"name": _text(obj, "name"), "box": box,
                            "difficult": _flag(obj, "difficult"),
                            "truncated": _flag(obj, "truncated")})
        except AnnotationError as exc:
            raise AnnotationError(f"object {i + 1}: {exc}") from None
    filename = root.find("filename")
    return {"filename": filename.text.strip() if filename is not None and filename.text
            else None,
            "width": int(_number(size, "width")), "height": int(_number(size, "height")),
            "objects": objects}


def write_annotation(path: Path, filename: str, width: int, height: int,
                     objects: Sequence[Mapping[str, Any]], folder: str = "VOC") -> Path:
    """Write a VOC XML annotation; ``objects`` hold ``name`` and ``box`` (VOC pixels)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for key, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for obj in objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = obj["name"]
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = str(int(obj.get("truncated", 0)))
        ET.SubElement(node, "difficult").text = str(int(obj.get("difficult", 0)))
        bb = ET.SubElement(node, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), obj["box"], strict=True):
            ET.SubElement(bb, key).text = str(int(round(value)))
    ET.indent(root)
    Path(path).write_bytes(ET.tostring(root, encoding="utf-8"))
    return Path(path)


def image_info(data: bytes) -> tuple[str, int, int]:
    """``(format, width, height)`` of a JPEG/PNG file, fully decoded to catch truncation.

    Raises:
        AnnotationError: Not a readable JPEG or PNG.

    """
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data), formats=("JPEG", "PNG"))
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise AnnotationError(f"not a readable JPEG/PNG image ({exc})") from None
    return img.format.lower(), img.size[0], img.size[1]


def annotated_image(xml: bytes, image: bytes, image_name: str, source_id: str,
                    class_names: Sequence[str], class_name: str | None = None
                    ) -> AnnotatedImage:
    """Check one annotation against its image and the classes; the record's content.

    ``class_name``, when given, is every object's class instead of its ``<name>`` (the
    pets' breed from the file name).

    Raises:
        AnnotationError: The reason the image goes to quarantine.

    """
    ann = parse_annotation(xml)
    fmt, width, height = image_info(image)
    if (ann["width"], ann["height"]) != (width, height):
        raise AnnotationError(f"annotation size {ann['width']}x{ann['height']} differs from "
                              f"the image's {width}x{height}")
    if not ann["objects"]:
        raise AnnotationError("no <object>")
    boxes, labels, texts = [], [], []
    for i, obj in enumerate(ann["objects"], 1):
        if class_name is not None:
            obj["name"] = class_name
        if obj["name"] not in class_names:
            raise AnnotationError(f"object {i}: unknown class name {obj['name']!r} (classes: "
                                  f"{', '.join(class_names)})")
        xmin, ymin, xmax, ymax = obj["box"]
        if not (0 <= xmin < xmax <= width and 0 <= ymin < ymax <= height):
            raise AnnotationError(f"object {i} ({obj['name']}): box {obj['box']} is outside "
                                  f"the {width}x{height} image or empty")
        boxes.append((xmin / width, ymin / height, xmax / width, ymax / height))
        labels.append(list(class_names).index(obj["name"]) + 1)
        texts.append(obj["name"])
    return AnnotatedImage(
        encoded=image, format=fmt, filename=image_name, source_id=source_id, height=height,
        width=width, boxes=np.asarray(boxes, np.float32), labels=tuple(labels),
        texts=tuple(texts), difficult=tuple(o["difficult"] for o in ann["objects"]),
        truncated=tuple(o["truncated"] for o in ann["objects"]))


@dataclass(frozen=True)
class VocDetectionSource:
    """Box-annotated images in Pascal VOC's (or the pets') folder layout.

    Rows are :class:`~tasks.data.detection.AnnotatedImage` objects in the column named
    ``column`` (written as Object Detection API records by preprocessing).

    Attributes:
        class_names: Classes fixed by the use case, in label-map order (label id =
            position + 1); empty (the default): from the data (module docstring).
        default_location: A folder in either layout, or ``synthetic:<train images>:<seed>``
            to have ``generator(dir, images, seed)`` write one (VOC layout).
        generator: Writes a generated data set in the VOC layout.
        column: Name of the column holding the annotated images.

    """

    default_location: str
    class_names: tuple[str, ...] = ()
    generator: Callable[[Path, int, int], None] | None = None
    column: str = "scene"
    seed: int = 42

    # -- files
    def files(self, location: str) -> dict[str, str]:
        """Annotations, images and split lists under ``location``, keyed by relative path.

        Raises:
            SourceError: No folder, or a layout part is missing (named).

        """
        if location.startswith(GENERATED):
            location = str(generated_location(location, self.generator, "voc",
                                              unit="training images", minimum=1))
        base = Path(location)
        if not base.is_dir():
            raise SourceError(f"{base}: source directory does not exist")
        name, layout = self._layout(base)
        out: dict[str, str] = {}
        for part in PARTITIONS:
            for rel in self._lists(base, name, part):
                out[rel] = str(base / rel)
        for folder, suffixes in ((layout["annotations"], (".xml",)),
                                 (layout["images"], IMAGE_SUFFIXES)):
            for path in sorted((base / folder).iterdir()):
                if path.is_file() and path.suffix.lower() in suffixes:
                    out[f"{folder}/{path.name}"] = str(path)
        maps = [p for folder in LABEL_MAP_FOLDERS if (base / folder).is_dir()
                for p in sorted((base / folder).iterdir())
                if p.is_file() and p.name.endswith(LABEL_MAP_SUFFIX)]
        if len(maps) > 1:
            raise SourceError(f"{base}: several label maps ({', '.join(map(str, maps))}); "
                              "keep one")
        for path in maps:
            out[path.relative_to(base).as_posix()] = str(path)
        return out

    @staticmethod
    def _layout(base: Path) -> tuple[str, dict[str, Any]]:
        for name, layout in LAYOUTS.items():
            if (base / layout["annotations"]).is_dir() and (base / layout["images"]).is_dir():
                return name, layout
        raise SourceError(f"{base}: not a Pascal VOC folder (JPEGImages/ + Annotations/ + "
                          "ImageSets/Main/) nor a pets folder (images/ + annotations/xmls/)")

    @staticmethod
    def _lists(base: Path, layout: str, part: str) -> tuple[str, ...]:
        for choice in LAYOUTS[layout][part]:
            rels = (choice,) if isinstance(choice, str) else choice
            if all((base / r).is_file() for r in rels):
                return rels
        wanted = " or ".join(c if isinstance(c, str) else " + ".join(c)
                             for c in LAYOUTS[layout][part])
        raise SourceError(f"{base}: missing the {part} split list {wanted}")

    # -- reading
    @staticmethod
    def _ids(path: str) -> list[str]:
        ids = []
        for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                ids.append(line.split()[0])
        return ids

    @staticmethod
    def _is_pets(files: Mapping[str, str]) -> bool:
        return any(k.startswith(LAYOUTS["pets"]["annotations"] + "/") for k in files)

    def _index(self, files: Mapping[str, str]) -> tuple[dict[str, list[str]],
                                                          dict[str, str], dict[str, str]]:
        """Ids per partition, and id -> annotation key / image key."""
        lists: dict[str, list[str]] = {p: [] for p in PARTITIONS}
        xmls, images = {}, {}
        for key in sorted(files):  # train.txt before val.txt
            if key.endswith(LABEL_MAP_SUFFIX):
                continue
            if key.endswith(".txt") and Path(key).stem in LIST_PARTITION:
                lists[LIST_PARTITION[Path(key).stem]].append(key)
            elif key.lower().endswith(".xml"):
                xmls[Path(key).stem] = key
            else:
                images[Path(key).stem] = key
        ids = {p: [sid for k in keys for sid in self._ids(files[k])]
               for p, keys in lists.items()}
        if self._is_pets(files):
            ids = self._pets_partitions(ids, xmls)
        return ids, xmls, images

    def _pets_partitions(self, ids: dict[str, list[str]], xmls: Mapping[str, str]
                         ) -> dict[str, list[str]]:
        """Annotated ids only; a seeded 30% of trainval as test when test has no boxes."""
        train = [i for i in ids["train"] if i in xmls]
        test = [i for i in ids["test"] if i in xmls]
        if not test and train:
            rng = np.random.default_rng(self.seed)
            n_test = max(1, round(len(train) * PETS_TEST_FRACTION))
            chosen = set(rng.permutation(len(train))[:n_test].tolist())
            test = [sid for j, sid in enumerate(train) if j in chosen]
            train = [sid for j, sid in enumerate(train) if j not in chosen]
        return {"train": train, "test": test}

    def class_list(self, files: Mapping[str, str]) -> ClassList:
        """The classes of this data: the spec's, the label map's, or the annotations' names.

        Raises:
            SourceError: A malformed label map, or no class name in any annotation.

        """
        return _classes(tuple(sorted(files.items())), self.class_names)

    def validate(self, files: Mapping[str, str]) -> dict[str, Any]:
        """The split lists name images; the classes (read from every annotation if needed)."""
        facts = self.check(files)
        classes = self.class_list(files)
        return {"class_names": list(classes.names), "class_origin": classes.origin, **facts}

    def check(self, files: Mapping[str, str]) -> dict[str, Any]:
        """Cheap check: the split lists name images (no annotation is parsed)."""
        ids, xmls, images = self._index(files)
        facts: dict[str, Any] = {}
        for part in PARTITIONS:
            if not ids[part]:
                raise SourceError(f"the {part} split list names no image id")
            facts[part] = {"rows": len(ids[part]),
                           "with_annotation": sum(i in xmls for i in ids[part]),
                           "with_image": sum(i in images for i in ids[part])}
        if self._is_pets(files):
            listed = {i for k in files if k.endswith(".txt") and Path(k).stem == "test"
                      for i in self._ids(files[k])}
            facts["test_ids_without_boxes"] = sum(i not in xmls for i in listed)
        return facts

    def partitions(self) -> dict[str, dict[str, str]]:
        """``train`` (trainval) and ``test``."""
        return {part: {} for part in PARTITIONS}

    def schema(self) -> dict[str, dict[str, Any]]:
        """One column of annotated images (encoded bytes + boxes)."""
        return {self.column: {"dtype": "string", "shape": [], "detection": True,
                              "class_names": list(self.class_names)}}  # the run's: stats

    def read_batches(self, files: Mapping[str, str], partition: str, batch_size: int
                     ) -> Iterator[dict[str, Any]]:
        """Yield ``{"row", <column>, "_bad"}`` batches in split-list order."""
        ids, xmls, images = self._index(files)
        names = self.class_list(files).names
        pets = self._is_pets(files)
        part_ids = ids[partition]
        for start in range(0, len(part_ids), batch_size):
            rows, scenes, bad = [], [], []
            for row in range(start, min(start + batch_size, len(part_ids))):
                sid = part_ids[row]
                xml_key, img_key = xmls.get(sid), images.get(sid)
                where = files[xml_key] if xml_key else (files[img_key] if img_key else sid)
                try:
                    if xml_key is None:
                        raise AnnotationError(f"image id {sid!r} has no annotation file")
                    if img_key is None:
                        raise AnnotationError(f"image id {sid!r} has no image file")
                    scene = annotated_image(
                        Path(files[xml_key]).read_bytes(), Path(files[img_key]).read_bytes(),
                        Path(img_key).name, sid, names, pet_breed(sid) if pets else None)
                except AnnotationError as exc:
                    bad.append({"file": where, "partition": partition, "row": row,
                                "field": self.column, "value": sid, "reason": str(exc)})
                    continue
                rows.append(row)
                scenes.append(scene)
            column = np.empty(len(scenes), dtype=object)
            column[:] = scenes
            yield {"row": np.asarray(rows, np.int64), self.column: column, "_bad": bad}


@lru_cache(maxsize=8)
def _classes(files: tuple[tuple[str, str], ...], fixed: tuple[str, ...]) -> ClassList:
    """:meth:`VocDetectionSource.class_list`, once per snapshot and process (Beam reads often)."""
    if fixed:
        return ClassList(tuple(fixed), "spec")
    maps = [path for key, path in files if key.endswith(LABEL_MAP_SUFFIX)]
    if maps:
        return ClassList(read_label_map(maps[0]), f"label map {Path(maps[0]).name}")
    source = VocDetectionSource(default_location="")
    mapping = dict(files)
    ids, xmls, _ = source._index(mapping)
    pets = source._is_pets(mapping)
    names: set[str] = set()
    for sid in (i for part in PARTITIONS for i in ids[part]):
        if sid not in xmls:
            continue
        if pets:
            with contextlib.suppress(AnnotationError):
                names.add(pet_breed(sid))
            continue
        with contextlib.suppress(AnnotationError):  # a malformed one is quarantined later
            names.update(o["name"] for o in parse_annotation(Path(mapping[xmls[sid]])
                                                               .read_bytes())["objects"])
    if not names:
        raise SourceError("no class name in any annotation (<object><name>) and no "
                          f"label map (*{LABEL_MAP_SUFFIX}): the detector has no classes")
    return ClassList(tuple(sorted(names)), "pets file names" if pets else "annotations")
