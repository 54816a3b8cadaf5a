"""Fail a CI job on the suite's verdict, read from its JSON report.

pytest's exit status already fails the job when any property fails. Use this instead when the
*verdict* should decide: a failing SHOULD requirement is a deviation that the verdict lists
without failing, and the run must have checked every requirement (an incomplete run fails here).

Usage: ``python ci_gate.py conformance.json``
"""

import json
import sys


def gate(report):
    """0 when the implementation conforms, 1 otherwise; prints the verdict and what failed."""
    print(report["verdict"])
    for entry in report["requirements"]:
        if entry["status"] == "fail":
            print(f"  {entry['id']} ({entry['level']}): {entry['message']}")
    if report["interrupted"] or report["collection_errors"]:
        print("the run was cut short or a module did not import: not a verdict")
        return 1
    return 0 if report["conforms"] is True else 1


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        sys.exit(gate(json.load(f)))
