"""The divergence check: a NaN or Inf in a loss, gradient norm or weight norm stops the run."""

import math
from typing import Optional

from mrigen.errors import UserError


class DivergedError(UserError):
    """A loss, gradient or weight became NaN or Inf; main.py exits with status 3."""

    exit_code = 3


def check_finite(step: int, metrics: dict, last_checkpoint: Optional[int] = None) -> dict:
    """The metrics as floats; raises DivergedError naming the step and quantity if any is not finite.

    The step's metrics include the norms of the new weights, so finite metrics
    vouch for the state a checkpoint of this step would hold.
    """
    values = {k: float(v) for k, v in metrics.items()}
    bad = sorted(k for k, v in values.items() if not math.isfinite(v))
    if bad:
        kept = ("there is no checkpoint yet" if last_checkpoint is None
                else f"the last checkpoint, step {last_checkpoint}, is kept")
        raise DivergedError(f"training diverged at step {step}: {', '.join(bad)} "
                            f"{'is' if len(bad) == 1 else 'are'} not finite; nothing was saved "
                            f"from this state ({kept})")
    return values
