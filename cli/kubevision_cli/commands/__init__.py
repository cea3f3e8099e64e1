"""The ``kubevision`` sub-commands, one module each, each with a ``COMMAND``."""
