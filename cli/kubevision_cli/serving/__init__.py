"""The serving runtime of ``kubevision predict`` (issue 14; docs/serving.md): the bundle under
``<output>/export/`` applied with onnxruntime, Pillow and numpy alone. No torch and no training
code (an import-linter contract forbids them): that the predictor runs is the proof that the
bundle is self-contained.

- :mod:`.bundle`: find the bundle from a URI, read ``preprocessing.json``,
  ``postprocessing.json`` and ``model.onnx``.
- :mod:`.preprocess`: an image file to one row of the graph's input, and the geometry that maps
  boxes back.
- :mod:`.postprocess`: the graph's outputs of one image to concepts and boxes.
- :mod:`.runner`: an onnxruntime session over batches of images.
"""
