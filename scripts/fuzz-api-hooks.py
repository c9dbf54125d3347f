"""schemathesis hooks for scripts/fuzz-api.

schemathesis reads a response body with Python's json module, which turns a number
beyond the float range (about +-1.8e308) into +-inf, and its schema validator then sees
null: a sum such as [1.7e308, 1.7e308], answered exactly as 3.4e308, would be reported
as "null is not of type number". sumsvc writes such sums exactly on purpose
(tests/it/sum_examples.rs), so request bodies with a sum (alone, or one of a batch's)
that lies beyond the float range and has a fraction or an exponent are left out of
generation. Integer sums of any size stay
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


def _exact_in_python(args):
    """Whether Python's json reads the sum of `args` as it is written: sums that are not
    all numbers are refused by sumsvc, integer sums are exact at any size, and others
    must lie within the float range."""
    if not isinstance(args, list) or not all(_is_number(a) for a in args):
        return True
    if all(isinstance(a, int) for a in args):
        return True
    return abs(sum(map(Fraction, args))) <= sys.float_info.max


@schemathesis.hook
def filter_body(ctx, body):
    if not isinstance(body, dict):
        return True
    # A single sum (sync/sum, post_task) or a batch of them (sync/sums, post_tasks).
    tasks = body.get("tasks")
    batch = tasks if isinstance(tasks, list) else []
    return all(
        _exact_in_python(task.get("args"))
        for task in [body] + batch
        if isinstance(task, dict)
    )


@schemathesis.hook
def map_case(ctx, case):
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = f'"{uuid.uuid4()}"'
    return case
