"""The evidence that the suite works, as runnable modules (``python -m gpt2_evidence.NAME``).

- ``kill_matrix``: the full suite on every mutant of the zoo (:mod:`gpt2_zoo`) under several
  hypothesis seeds -> ``docs/data/kill-matrix.json``.
- ``false_alarm_campaign``: the conformant built-ins over many seeds of the thorough profile ->
  ``docs/data/false-alarms.json``.
- ``peers_matrix``: the causal-lm requirements on other transformers architectures ->
  ``docs/data/peers.json``.
- ``refresh_reports``: the suite's JSON report of each built-in -> ``docs/data/reports/``.
- ``measure_tolerances``, ``measure_shape_tolerances``: the measurements behind spec chapter 7's
  tolerance table.
- ``cpu_gpu_agreement``: the reference on a CUDA device against itself on the CPU.
- ``provenance``: the machine, software and commit every record carries, in one layout.

Each producer module also has ``render_markdown(data)``, which the docs build imports to turn the
committed JSON into the evidence pages; importing a module runs nothing.
"""
