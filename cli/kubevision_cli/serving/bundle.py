"""Find and read a serving bundle (``export/``, :mod:`kubevision_api.bundle`) through fsspec:
a local folder, a ``file://`` URI or any fsspec URI (``s3://`` needs s3fs, with the plain
``AWS_*`` variables that botocore reads)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TypeVar

import fsspec
from fsspec.core import url_to_fs
from pydantic import BaseModel, ValidationError

from kubevision_api.bundle import Postprocessing, Preprocessing
from kubevision_api.errors import InputError
from kubevision_api.export import EXPORT_FOLDER, ONNX_FILE, POSTPROCESSING_JSON, PREPROCESSING_JSON
from kubevision_api.manifests import validation_error
from kubevision_api.view import Task

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Bundle:
    """A bundle read from storage.

    Attributes:
        uri: the bundle's folder (``.../export``).
        preprocessing: ``preprocessing.json``.
        postprocessing: ``postprocessing.json``.
        model: the bytes of ``model.onnx``.
    """

    uri: str
    preprocessing: Preprocessing
    postprocessing: Postprocessing
    model: bytes


def _join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}"


def locate(uri: str) -> str:
    """The bundle's folder: ``uri`` itself when it holds ``preprocessing.json``, else its
    ``export/`` (``uri`` is then the training run's output URI).

    Raises:
        InputError: neither holds ``preprocessing.json``, or storage cannot be reached.
    """
    try:
        fs, path = url_to_fs(uri)
        for folder, local in ((uri, path), (_join(uri, EXPORT_FOLDER), _join(path, EXPORT_FOLDER))):
            if fs.exists(_join(local, PREPROCESSING_JSON)):
                return folder
    except (OSError, ValueError, ImportError) as exc:
        raise InputError(uri, f"cannot read the bundle: {exc}") from exc
    raise InputError(
        uri,
        f"no serving bundle: neither {PREPROCESSING_JSON} nor {EXPORT_FOLDER}/"
        f"{PREPROCESSING_JSON} exists (the Exporting step of `kubevision train` writes "
        f"<output>/{EXPORT_FOLDER}/ when spec.export.formats includes onnx)",
    )


def read_bytes(uri: str, what: str) -> bytes:
    """The whole object at ``uri``.

    Raises:
        InputError: missing or unreadable; ``what`` says what it is (``the image``).
    """
    try:
        with fsspec.open(uri, "rb") as handle:
            data: bytes = handle.read()
    except FileNotFoundError as exc:
        raise InputError(uri, f"cannot read {what}: no such file") from exc
    except (OSError, ValueError, ImportError) as exc:
        raise InputError(uri, f"cannot read {what}: {exc}") from exc
    return data


def _model(cls: type[M], uri: str) -> M:
    data = read_bytes(uri, "the bundle's file")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(uri, f"not JSON: {exc}") from exc
    try:
        return cls.model_validate(document)
    except ValidationError as exc:
        raise validation_error(exc, uri) from exc


def load(uri: str) -> Bundle:
    """Read the bundle that ``uri`` names (:func:`locate`) and check that its two JSON files
    agree with each other.

    Raises:
        InputError: no bundle, a file missing or unreadable, not JSON or not of its schema
            (the file and the field are named), or thresholds that do not match the concepts.
    """
    folder = locate(uri)
    pre = _model(Preprocessing, _join(folder, PREPROCESSING_JSON))
    post_uri = _join(folder, POSTPROCESSING_JSON)
    post = _model(Postprocessing, post_uri)
    for field, values in (
        ("thresholds", post.thresholds),
        ("thresholdSource", post.threshold_source),
    ):
        if values is not None and len(values) != len(post.concepts):
            raise InputError(
                post_uri, f"{len(values)} values for {len(post.concepts)} concepts", field=field
            )
    if post.task is Task.DETECTION and post.max_detections is None:
        raise InputError(post_uri, "a detection bundle needs maxDetections", field="maxDetections")
    model = read_bytes(_join(folder, ONNX_FILE), "the ONNX model (spec.export.formats: onnx)")
    return Bundle(folder, pre, post, model)
