"""The serving bundle: graphs, Triton model repository (issue 14; docs/serving.md)."""
