"""The ``sbi-ops`` command line: thin commands over ``sbi_core``, ``validation`` and ``flows``."""
