"""Image-folder reader: ``root/<concept>/<images>``, classification only.

A sub-folder whose name is not a concept of the View is ignored and its images counted under
its name in ``ignored_annotations`` (a View may take a subset of the concepts). A concept
without a folder simply has no images. Images nested deeper inside a concept folder belong to
that concept, as in torchvision's ``ImageFolder``; images lying directly in the root have no
concept and are counted as ``OutsideConceptFolder``. Other files and hidden entries (names
starting with ``.``) are not images and are passed over.
"""

from __future__ import annotations

from kubevision_api import errors, view
from kubevision_api.contract import StorageRole
from kubevision_trainer import storage
from kubevision_trainer.data.sample import ReadResult, Sample

#: Image file extensions, compared lowercase.
EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def is_image_name(name: str) -> bool:
    """Whether a file name has one of :data:`EXTENSIONS` (case-insensitive) and is not hidden."""
    if name.startswith(".") or "." not in name:
        return False
    return "." + name.rsplit(".", 1)[1].lower() in EXTENSIONS


def read(source_uri: str, task: view.Task, concepts: list[str]) -> ReadResult:
    """Read an image folder.

    Args:
        source_uri: fsspec URI of the root folder; image URIs are the root joined with
            ``<concept>/<file>``.
        task: the View's task; must be classification.
        concepts: concept names in class-index order (index ``i`` is ``concepts[i]``).

    Returns:
        Samples sorted by path (``<concept>/<file>``), each with one label; ``skipped`` counts
        ``OutsideConceptFolder``; ``ignored_annotations`` counts images per unknown sub-folder;
        ``names_not_in_view`` holds every sub-folder name that is no concept, empty or not.

    Raises:
        InputError: the task is not classification, or the root folder does not exist.
    """
    if task is not view.Task.CLASSIFICATION:
        raise errors.InputError(
            source_uri,
            f"the imagefolder format carries classification only, not {task.value}",
            field="format",
        )
    index = {name: i for i, name in enumerate(concepts)}
    result = ReadResult(samples=[], source=source_uri)
    for name, is_dir in storage.list_dir(source_uri, role=StorageRole.DATASET):
        if name.startswith("."):
            continue
        if not is_dir:
            if is_image_name(name):
                result.skipped["OutsideConceptFolder"] += 1
            continue
        paths = _images_under(source_uri, name)
        if name not in index:
            result.names_not_in_view.add(name)
            if paths:
                result.ignored_annotations[name] += len(paths)
            continue
        result.samples.extend(
            Sample(
                path=path,
                uri=storage.join(source_uri, path),
                labels=(index[name],),
                record=path,
            )
            for path in paths
        )
    result.samples.sort(key=lambda s: s.path)
    return result


def _images_under(root: str, folder: str) -> list[str]:
    """Image paths relative to ``root`` under ``root/folder``, at any depth."""
    found: list[str] = []
    pending = [folder]
    while pending:
        current = pending.pop()
        for name, is_dir in storage.list_dir(storage.join(root, current), role=StorageRole.DATASET):
            if name.startswith("."):
                continue
            path = f"{current}/{name}"
            if is_dir:
                pending.append(path)
            elif is_image_name(name):
                found.append(path)
    return found
