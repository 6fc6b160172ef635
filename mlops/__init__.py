"""MLflow and ZenML code that is not a step: the local stack, registration helpers, the registered
pyfunc model, the benchmark's tracker and the command line's tracked commands.

Beside ``steps/`` and ``pipelines/``; ``drift/`` never imports it.
"""
