"""schemathesis hooks for scripts/fuzz-api.

schemathesis reads a response body with Python's json module, which turns a number
beyond the float range (about +-1.8e308) into +-inf, and its schema validator then sees
null: a sum such as [1.7e308, 1.7e308], answered exactly as 3.4e308, would be reported
as "null is not of type number". sumsvc writes such sums exactly on purpose
(tests/it/sum_examples.rs), so request bodies whose sum lies beyond the float range, and
has a fraction or an exponent, are left out of generation. Integer sums of any size stay
in: Python reads them exactly.

An Idempotency-Key sent again with another request is refused with 422, as it must be;
schemathesis, which reuses the values it generates across cases, would report that as a
valid request refused. So each case it generates gets a key of its own (tests/it/
idempotency.rs checks what a key does when it comes again).
"""

import math
import sys
import uuid
from fractions import Fraction

import schemathesis


def _is_number(value):
    """A finite JSON number (bool is an int in Python; inf and nan are not JSON)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)


@schemathesis.hook
def filter_body(ctx, body):
    args = body.get("args") if isinstance(body, dict) else None
    if not isinstance(args, list) or not all(_is_number(a) for a in args):
        return True
    if all(isinstance(a, int) for a in args):
        return True
    return abs(sum(map(Fraction, args))) <= sys.float_info.max


@schemathesis.hook
def map_case(ctx, case):
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = f'"{uuid.uuid4()}"'
    return case
