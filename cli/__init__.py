"""The application shell: the ``tickstream`` command, its subcommands and the runner.

The only package that imports every stage (producers, processors, sinks); the
stages import nothing from here, only the shared core in ``tickstream``.
"""
