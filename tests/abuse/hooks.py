"""schemathesis hooks of the abuse run (loaded through SCHEMATHESIS_HOOKS by abuse.py).

Each hook is as narrow as it can be, and says why it exists.
"""

import os

import schemathesis

PROTECTED_TOKENS = {
    int(i) for i in os.environ.get("FWDIST_ABUSE_PROTECTED_TOKENS", "").split(",") if i.strip().isdigit()
}


@schemathesis.hook
def filter_case(context, case):
    # The admin run must not revoke the tokens the runs authenticate with: a revoked token turns
    # every later request into a (correct) 401 and the run would test nothing more. Spare tokens
    # are seeded for DELETE /tokens/{id} to revoke instead; every other id is still generated.
    if case.method.upper() == "DELETE" and case.path == "/api/v1/tokens/{id}":
        try:
            return int(str(case.path_parameters.get("id"))) not in PROTECTED_TOKENS
        except ValueError:
            return True
    return True
