"""manifests.load: folders, multi-document files, and errors that name the file, the object
and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubevision_api.errors import InputError
from kubevision_api.manifests import field_path, load
from kubevision_api.modelversion import ModelVersion
from kubevision_api.view import View

VIEW = """\
apiVersion: kubevision.dev/v1alpha1
kind: View
metadata:
  name: digits
spec:
  task: classification
  concepts: [{name: "0"}, {name: "1"}]
  dataset: {uri: data/digits, format: imagefolder}
"""

MODEL_VERSION = """\
apiVersion: kubevision.dev/v1alpha1
kind: ModelVersion
metadata:
  name: digits-v1
spec:
  viewRef: {name: digits}
  architecture: resnet18
  training: {epochs: 2}
"""


def test_field_path() -> None:
    assert field_path(["spec", "concepts", 0, "name"]) == "spec.concepts[0].name"
    assert field_path(["spec", "augmentation", 2]) == "spec.augmentation[2]"
    assert field_path([]) == ""


def test_multi_document_file(tmp_path: Path) -> None:
    path = tmp_path / "all.yaml"
    # An empty document (a stray '---') is skipped, not an error.
    path.write_text(VIEW + "---\n" + MODEL_VERSION + "---\n")
    loaded = load([path])
    assert [type(item.obj) for item in loaded] == [View, ModelVersion]
    assert all(item.source == path for item in loaded)
    mv = loaded[1].obj
    assert isinstance(mv, ModelVersion) and mv.spec.training.epochs == 2


def test_folder_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b-view.yaml").write_text(VIEW)
    (tmp_path / "a-mv.yaml").write_text(MODEL_VERSION)
    (tmp_path / "notes.txt").write_text("not a manifest: {{")
    loaded = load([tmp_path])
    assert [item.source.name for item in loaded] == ["a-mv.yaml", "b-view.yaml"]
    assert [item.obj.metadata.name for item in loaded] == ["digits-v1", "digits"]


def test_folder_without_manifests(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="folder holds no"):
        load([tmp_path])


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(InputError) as info:
        load([path])
    assert info.value.source == str(path)
    assert "cannot read" in str(info.value)


def test_yaml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("kind: View\nmetadata: {name: x\n")
    with pytest.raises(InputError) as info:
        load([path])
    assert info.value.source == str(path)
    assert str(info.value).startswith(f"{path}: not valid YAML")


def test_unknown_kind(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\n")
    with pytest.raises(InputError) as info:
        load([path])
    assert (info.value.source, info.value.field) == (str(path), "kind")
    assert "'Job' is not View or ModelVersion" in str(info.value)


def test_document_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text(VIEW + "---\n- a\n- b\n")
    with pytest.raises(InputError) as info:
        load([path])
    assert info.value.record == "document 1"


def test_bad_field_names_file_object_and_path(tmp_path: Path) -> None:
    path = tmp_path / "mv.yaml"
    path.write_text(VIEW + "---\n" + MODEL_VERSION.replace("epochs: 2", "epochs: 0"))
    with pytest.raises(InputError) as info:
        load([path])
    err = info.value
    assert err.source == str(path)
    assert err.record == "ModelVersion digits-v1"
    assert err.field == "spec.training.epochs"
    assert str(err) == (
        f"{path}: ModelVersion digits-v1: spec.training.epochs: "
        "Input should be greater than or equal to 1"
    )


def test_bad_field_in_a_list_and_error_count(tmp_path: Path) -> None:
    path = tmp_path / "view.yaml"
    bad = VIEW.replace('[{name: "0"}, {name: "1"}]', '[{name: "0"}, {nam: "1"}]').replace(
        "format: imagefolder", "format: png"
    )
    path.write_text(bad)
    with pytest.raises(InputError) as info:
        load([path])
    err = info.value
    assert err.record == "View digits"
    assert err.field is not None and err.field.startswith("spec.concepts[1]")
    assert str(err).endswith("(and 2 more)")  # nam extra, name missing, bad format: 3 errors


def test_unknown_field_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mv.yaml"
    path.write_text(MODEL_VERSION.replace("training:", "trainng:"))
    with pytest.raises(InputError) as info:
        load([path])
    assert info.value.field == "spec.trainng"
    assert "Extra inputs are not permitted" in str(info.value)
