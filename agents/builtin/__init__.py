"""The built-in agents a ``[workflows]`` table adds to the tree: ``coordinator``, ``task-1`` ... ``task-N`` and
``monitor``."""
