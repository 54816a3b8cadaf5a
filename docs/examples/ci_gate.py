"""Fail a CI job on the suite's verdict, read from its JSON report, from your own Python code.

``python -m gpt2_conformance.report check conformance.json`` does this from the shell; this is
the same check for a script that wants the report's lines too. The verdict decides, not the
exit status of pytest: a failing SHOULD requirement is a deviation that the verdict lists
without failing, and the report must be complete and have checked every requirement (a run that
died, was interrupted or left something unchecked fails here).

Usage: ``python ci_gate.py conformance.json``
"""

import json
import sys

from gpt2_conformance.report import CHECK_CONFORMS, check_report


def gate(report):
    """0 when the implementation conforms, 1 otherwise; prints the verdict and what failed."""
    status, lines = check_report(report)
    for line in lines:
        print(line)
    return 0 if status == CHECK_CONFORMS else 1


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        sys.exit(gate(json.load(f)))
