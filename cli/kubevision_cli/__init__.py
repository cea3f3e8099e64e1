"""The ``kubevision`` command: the top floor of the house. It wires the api, the trainer and
the operator and nothing imports it. One module per sub-command under
``kubevision_cli.commands``; ``kubevision_cli.main`` lists them and turns errors into exit
codes."""
