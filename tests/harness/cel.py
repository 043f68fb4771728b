#!/usr/bin/env python3
"""CEL rules evaluated the way the API server evaluates a CRD's x-kubernetes-validations,
with cel-python (a CEL implementation of its own; the API server uses cel-go).

  cel.py < CASES_JSON    CASES_JSON: a list of {"rule": ..., "self": ...}; prints a JSON
                         list with, for each case, true, false or "error: ..." (a rule that
                         does not compile or evaluate)

Runs in the virtualenv that tests/harness/bootstrap.sh prepares.
"""
import json
import sys

import celpy
from celpy import celtypes


def main():
    cases = json.load(sys.stdin)
    environment = celpy.Environment()
    programs = {}
    verdicts = []
    for case in cases:
        rule = case["rule"]
        try:
            if rule not in programs:
                programs[rule] = environment.program(environment.compile(rule))
            result = programs[rule].evaluate({"self": celpy.json_to_cel(case["self"])})
            if isinstance(result, celtypes.BoolType):
                verdicts.append(bool(result))
            else:
                verdicts.append(f"error: {result!r}")
        except Exception as error:  # a rule that does not compile is a finding, not a crash
            verdicts.append(f"error: {error}")
    json.dump(verdicts, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
