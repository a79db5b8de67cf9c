"""Analytic FLOP count of a JAX function, layer by layer, from its jaxpr.

Counts 2 * multiply-accumulates of every convolution and matrix product the
function performs (forward, backward and penalty double-backward alike);
elementwise work is left out, as is usual for a FLOP budget. A transposed
convolution written with input dilation is counted over its zero-inserted
input, as the hardware would execute it.
"""

import math

import jax
from jax.extend import core as jax_core


def _conv_flops(eqn) -> int:
    lhs, rhs = (v.aval for v in eqn.invars[:2])
    out = eqn.outvars[0].aval
    dims = eqn.params["dimension_numbers"]
    rhs_spec = dims.rhs_spec  # (out_features, in_features, *spatial)
    kernel_spatial = math.prod(rhs.shape[i] for i in rhs_spec[2:])
    in_features = rhs.shape[rhs_spec[1]]
    return 2 * math.prod(out.shape) * kernel_spatial * in_features


def _dot_flops(eqn) -> int:
    lhs, rhs = (v.aval for v in eqn.invars[:2])
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    contracted = math.prod(lhs.shape[i] for i in lhs_contract)
    return 2 * math.prod(eqn.outvars[0].aval.shape) * contracted


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, jax_core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jax_core.Jaxpr):
                yield item


def jaxpr_flops(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name == "dot_general":
            total += _dot_flops(eqn)
        repeat = eqn.params.get("length", 1) if name == "scan" else 1
        for sub in _sub_jaxprs(eqn):
            total += repeat * jaxpr_flops(sub)
    return total


def count_flops(fn, *args) -> int:
    """FLOPs of one call of `fn(*args)` (matmuls and convolutions)."""
    return jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)
