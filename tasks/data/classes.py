"""Class names read from the data: label maps, and the record of a run's classes.

A classifier's or detector's classes are the data's, unless the use case's spec fixes
them (``ModelSpec.class_names``, or a source's own ``class_names``). A source that can
read them implements ``class_list(files) -> ClassList`` (a label map, the annotations'
names, the image folders, a CIFAR ``batches.meta``); otherwise preprocessing names the
integer label values (``"0"`` .. ``"K-1"``). Preprocessing records them in the run's
``stats.json`` under ``classes`` (``{"names": [...], "origin": "..."}``), so the model
builder, the objective, the served model's metadata and the model card all read the same
list: label id ``i`` is ``names[i]`` (detectors: id ``i + 1``, as the Object Detection
API's label maps).

**Label maps** are the TensorFlow Object Detection API's ``StringIntLabelMap`` in protobuf
text format (``label_map.pbtxt``, e.g. the pets example's ``pet_label_map.pbtxt``)::

    item {
      id: 1
      name: 'Abyssinian'
    }

They are parsed and written by protobuf's own ``text_format`` with the API's message
declared here (fields ``name`` = 1, ``id`` = 2, ``display_name`` = 3; other fields of
newer label maps, such as keypoints, are skipped). Ids must be 1..N, each once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from tasks.core.errors import PermanentError

LABEL_MAP_SUFFIX = "label_map.pbtxt"


class LabelMapError(PermanentError, ValueError):
    """A label map file is malformed; the message names the file."""


@dataclass(frozen=True)
class ClassList:
    """The classes of a run, in label-id order, and where they came from.

    Attributes:
        names: Class names; label id ``i`` is ``names[i]`` (detectors: id ``i + 1``).
        origin: Where they were read (``label map <file>``, ``annotations``, ``image
            folders``, ``spec``, ``label values`` ...), for the model card and the logs.

    """

    names: tuple[str, ...]
    origin: str

    def __post_init__(self) -> None:
        dupes = sorted({n for n in self.names if self.names.count(n) > 1})
        if dupes:
            raise ValueError(f"class names must be distinct; repeated: {dupes}")

    def to_stats(self) -> dict[str, Any]:
        """The JSON entry stored under ``stats.json``'s ``CLASSES_STATS_KEY``."""
        return {"names": list(self.names), "origin": self.origin}

    @classmethod
    def from_values(cls, values: Iterable[Any]) -> ClassList | None:
        """Names of integer label values ``0..max`` (``"0"``, ``"1"`` ...), or None."""
        ints = []
        for v in values:
            try:
                ints.append(int(v))
            except (TypeError, ValueError):
                return None
        if not ints or min(ints) < 0:
            return None
        return cls(tuple(str(i) for i in range(max(ints) + 1)), "label values")


# --------------------------------------------------------------------------- label maps
@cache
def _label_map_class() -> Any:
    """The Object Detection API's ``StringIntLabelMap`` message, declared in a private pool."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(
        name="mlp/string_int_label_map.proto", package="object_detection.protos",
        syntax="proto2")
    f = descriptor_pb2.FieldDescriptorProto
    item = fdp.message_type.add(name="StringIntLabelMapItem")
    item.field.add(name="name", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    item.field.add(name="id", number=2, type=f.TYPE_INT32, label=f.LABEL_OPTIONAL)
    item.field.add(name="display_name", number=3, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    top = fdp.message_type.add(name="StringIntLabelMap")
    top.field.add(name="item", number=1, type=f.TYPE_MESSAGE, label=f.LABEL_REPEATED,
                  type_name=".object_detection.protos.StringIntLabelMapItem")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("object_detection.protos.StringIntLabelMap"))


def read_label_map(path: str | Path) -> tuple[str, ...]:
    """Class names of a ``label_map.pbtxt`` in id order (id 1 first).

    Raises:
        LabelMapError: Not a label map, an item without a name or id, ids not 1..N, or a
            name given twice (the message names the file).

    """
    from google.protobuf import text_format

    path = Path(path)
    msg = _label_map_class()()
    try:
        text_format.Parse(path.read_text(encoding="utf-8"), msg, allow_unknown_field=True)
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise LabelMapError(f"{path}: not a label map in protobuf text format ({exc})") from None
    by_id: dict[int, str] = {}
    for i, it in enumerate(msg.item, 1):
        if not it.HasField("id") or not it.HasField("name") or not it.name.strip():
            raise LabelMapError(f"{path}: item {i} needs both an id and a name")
        if it.id in by_id:
            raise LabelMapError(f"{path}: id {it.id} is given twice ({by_id[it.id]!r}, "
                                f"{it.name!r})")
        by_id[it.id] = it.name.strip()
    if not by_id:
        raise LabelMapError(f"{path}: the label map has no items")
    if sorted(by_id) != list(range(1, len(by_id) + 1)):
        raise LabelMapError(f"{path}: ids must be 1..{len(by_id)} (each once), got "
                            f"{sorted(by_id)}")
    names = tuple(by_id[i] for i in range(1, len(by_id) + 1))
    if len(set(names)) != len(names):
        raise LabelMapError(f"{path}: a class name is given twice: {list(names)}")
    return names


def write_label_map(path: str | Path, names: Sequence[str]) -> Path:
    """Write ``names`` as a label map (ids 1..N in order), as the Object Detection API's."""
    from google.protobuf import text_format

    msg = _label_map_class()()
    for i, name in enumerate(names, 1):
        msg.item.add(id=i, name=name)
    Path(path).write_text(text_format.MessageToString(msg), encoding="utf-8")
    return Path(path)
