"""An onnxruntime session over a bundle: images in batches through pre-processing, the graph
and post-processing, one result per image."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from kubevision_api.errors import InputError
from kubevision_api.export import ONNX_FILE
from kubevision_api.view import Task
from kubevision_cli.serving import postprocess
from kubevision_cli.serving.bundle import Bundle, read_bytes
from kubevision_cli.serving.preprocess import Placement, preprocess


class Predictor:
    """The bundle's graph in an onnxruntime ``InferenceSession`` on the CPU.

    Raises (at construction):
        InputError: ``model.onnx`` is not a model onnxruntime can load, or its input and output
            names are not those that the bundle's JSON files name.
    """

    def __init__(self, bundle: Bundle, *, threads: int = 0) -> None:
        self.bundle = bundle
        options = ort.SessionOptions()
        # 0: onnxruntime's default, one thread per physical core.
        options.intra_op_num_threads = threads
        # Errors only: the graph optimiser warns about every detector's per-image Loop
        # (CanUpdateImplicitInputNameInSubgraphs), which says nothing about the outputs; a
        # failure still raises.
        options.log_severity_level = 3
        model_uri = f"{bundle.uri.rstrip('/')}/{ONNX_FILE}"
        try:
            self.session = ort.InferenceSession(
                bundle.model, options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own, unexported, exception types
            raise InputError(model_uri, f"onnxruntime cannot load the model: {exc}") from exc
        inputs = [node.name for node in self.session.get_inputs()]
        outputs = [node.name for node in self.session.get_outputs()]
        pre, post = bundle.preprocessing, bundle.postprocessing
        if pre.input_name not in inputs:
            raise InputError(
                model_uri,
                f"the graph's inputs are {inputs}, not {pre.input_name!r} as "
                "preprocessing.json says",
                field="inputName",
            )
        missing = [name for name in post.outputs if name not in outputs]
        if missing:
            raise InputError(
                model_uri,
                f"the graph's outputs are {outputs}; postprocessing.json names {missing} too",
                field="outputs",
            )

    def run(self, images: np.ndarray[Any, np.dtype[np.float32]]) -> dict[str, np.ndarray[Any, Any]]:
        """The graph's outputs, by name, for an ``(N, 3, height, width)`` float32 batch."""
        post = self.bundle.postprocessing
        values = self.session.run(post.outputs, {self.bundle.preprocessing.input_name: images})
        return {name: np.asarray(value) for name, value in zip(post.outputs, values, strict=True)}

    def results(
        self, outputs: dict[str, np.ndarray[Any, Any]], places: Sequence[Placement]
    ) -> list[dict[str, Any]]:
        """One result per image of a batch (:mod:`.postprocess`)."""
        post = self.bundle.postprocessing
        found: list[dict[str, Any]] = []
        for i, where in enumerate(places):
            if post.task is Task.DETECTION:
                rows = {name: value[i] for name, value in outputs.items()}
                found.append(postprocess.detection(post, rows, where))
            else:
                logits = outputs[post.outputs[0]][i]
                if post.task is Task.CLASSIFICATION:
                    found.append(postprocess.classification(post, logits))
                else:
                    found.append(postprocess.tagging(post, logits))
        return found

    def predict(self, images: Sequence[str], batch_size: int) -> Iterator[dict[str, Any]]:
        """``{"image": uri, ...}`` per image, in order, batch by batch.

        Raises:
            InputError: an image cannot be read or decoded (names it); raised when its batch
                is reached, after the results of the batches before it.
        """
        spec = self.bundle.preprocessing
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            rows, places = [], []
            for uri in chunk:
                row, where = preprocess(read_bytes(uri, "the image"), uri, spec)
                rows.append(row)
                places.append(where)
            outputs = self.run(np.stack(rows))
            for uri, result in zip(chunk, self.results(outputs, places), strict=True):
                yield {"image": uri, **result}
