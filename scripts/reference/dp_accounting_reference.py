#!/usr/bin/env python3
"""Reference ε values for amalgam-dp's record-level accountant, from Google's dp_accounting.

For every (q, z, steps) of a fixed grid and every δ it computes, for `steps` compositions of the
Poisson-subsampled Gaussian (sampling rate q, noise multiplier z = σ/Δ, add-or-remove-one
adjacency):

* `rdp_integer`: dp_accounting's `RdpAccountant` on amalgam-dp's dense integer orders (the list
  below; the Rust tests check that it is the crate's `RdpOrders::dense()`), with the order that
  attained the minimum;
* `rdp_default`: the same accountant on its default orders (fractional ones included);
* `pld_pessimistic`: `PLDAccountant` (connect-the-dots, pessimistic estimate, value
  discretization interval `PLD_INTERVAL`): an upper bound on the exact ε, up to the discarded
  tail mass e^`PLD_LOG_TRUNCATION` per step;
* `pld_optimistic`: the same PLD built by the privacy-buckets algorithm with
  `pessimistic_estimate=False` (losses rounded down): a lower bound on the exact ε (up to the
  same discarded tail mass), so any sound accountant must be at or above it.

CI does not run Python: the output is committed and read by
crates/amalgam-dp/tests/record_accountant.rs. Run it in a venv made from
requirements/dp-accounting.txt:

    python3 -m venv /tmp/dpacc && /tmp/dpacc/bin/pip install --require-hashes --no-deps \
        -r requirements/dp-accounting.txt
    /tmp/dpacc/bin/python scripts/reference/dp_accounting_reference.py \
        > crates/amalgam-dp/tests/data/dp_accounting_reference.json
"""

import json
import math
import sys
from importlib import metadata

import dp_accounting
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant, privacy_loss_distribution
from dp_accounting.rdp import rdp_privacy_accountant

# amalgam-dp's `RdpOrders::dense()`: every integer from 2 to 64, then coarser steps to 1024.
INTEGER_ORDERS = (
    list(range(2, 65))
    + list(range(68, 129, 4))
    + list(range(136, 257, 8))
    + list(range(272, 513, 16))
    + list(range(544, 1025, 32))
)

SAMPLING_RATES = [0.001, 0.01, 0.05, 0.2, 1.0]
NOISE_MULTIPLIERS = [0.6, 0.8, 1.0, 1.5, 3.0, 10.0]
STEPS = [1, 10, 100, 1000, 10000]
DELTAS = [1e-5, 1e-6, 1e-9]
PLD_INTERVAL = 1e-4
PLD_LOG_TRUNCATION = -50.0
# PLDs whose ε at the smallest δ is above this are left out: they are far outside any useful
# regime and their support makes the FFT composition slow.
PLD_MAX_EPSILON = 200.0

NEIGHBOURS = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE


def event(q, z, steps):
    gaussian = dp_event.GaussianDpEvent(z)
    inner = gaussian if q == 1.0 else dp_event.PoissonSampledDpEvent(q, gaussian)
    return dp_event.SelfComposedDpEvent(inner, steps)


def rdp_epsilon(orders, q, z, steps, delta):
    accountant = rdp_privacy_accountant.RdpAccountant(orders, NEIGHBOURS)
    accountant.compose(event(q, z, steps))
    eps, order = accountant.get_epsilon_and_optimal_order(delta)
    return float(eps), float(order)


def pld_epsilons(q, z, steps):
    """(pessimistic accountant, optimistic PLD) ε for every δ, or None when out of range."""
    accountant = pld_privacy_accountant.PLDAccountant(NEIGHBOURS, PLD_INTERVAL)
    accountant.compose(event(q, z, steps))
    pessimistic = [float(accountant.get_epsilon(d)) for d in DELTAS]
    if not all(math.isfinite(e) for e in pessimistic):
        return None
    optimistic_pld = privacy_loss_distribution.from_gaussian_mechanism(
        standard_deviation=z,
        sensitivity=1.0,
        pessimistic_estimate=False,
        value_discretization_interval=PLD_INTERVAL,
        log_mass_truncation_bound=PLD_LOG_TRUNCATION,
        sampling_prob=q,
        # connect-the-dots has no optimistic form; privacy buckets (rounding losses down) has.
        use_connect_dots=False,
        neighboring_relation=NEIGHBOURS,
    ).self_compose(steps)
    optimistic = [float(optimistic_pld.get_epsilon_for_delta(d)) for d in DELTAS]
    return pessimistic, optimistic


def main():
    cases = []
    for q in SAMPLING_RATES:
        for z in NOISE_MULTIPLIERS:
            for steps in STEPS:
                integer = [rdp_epsilon(INTEGER_ORDERS, q, z, steps, d) for d in DELTAS]
                default = [rdp_epsilon(None, q, z, steps, d) for d in DELTAS]
                pld = None
                if max(e for e, _ in default) <= PLD_MAX_EPSILON:
                    pld = pld_epsilons(q, z, steps)
                for i, delta in enumerate(DELTAS):
                    case = {
                        "q": q,
                        "z": z,
                        "steps": steps,
                        "delta": delta,
                        "rdp_integer": {"epsilon": integer[i][0], "order": integer[i][1]},
                        "rdp_default": {"epsilon": default[i][0], "order": default[i][1]},
                    }
                    if pld is not None:
                        case["pld_pessimistic"] = pld[0][i]
                        case["pld_optimistic"] = pld[1][i]
                    cases.append(case)
                print(f"q={q} z={z} steps={steps} done", file=sys.stderr, flush=True)
    out = {
        "library": "dp-accounting",
        "library_version": metadata.version("dp-accounting"),
        "numpy_version": metadata.version("numpy"),
        "scipy_version": metadata.version("scipy"),
        "python_version": sys.version.split()[0],
        "neighboring_relation": "ADD_OR_REMOVE_ONE",
        "mechanism": "steps-fold composition of the Poisson-subsampled Gaussian, sampling "
        "rate q, noise multiplier z = sigma / L2 sensitivity (q = 1: the plain Gaussian)",
        "rdp_conversion": "RdpAccountant.get_epsilon_and_optimal_order: "
        "eps = min over orders a of rdp(a) + log1p(-1/a) - log(delta * a) / (a - 1) "
        "(Canonne-Kamath-Steinke 2020 Prop. 12 / Balle et al. 2020), 0 when "
        "delta^2 + expm1(-rdp) > 0, clamped at 0",
        "rdp_integer_orders": INTEGER_ORDERS,
        "rdp_default_orders": [float(a) for a in rdp_privacy_accountant.DEFAULT_RDP_ORDERS],
        "pld": {
            "pessimistic": "PLDAccountant(ADD_OR_REMOVE_ONE, value_discretization_interval)"
            ": connect-the-dots, pessimistic_estimate=True (upper bound)",
            "optimistic": "from_gaussian_mechanism(pessimistic_estimate=False, "
            "use_connect_dots=False (privacy buckets), ...).self_compose(steps) (lower bound)",
            "value_discretization_interval": PLD_INTERVAL,
            "log_mass_truncation_bound": PLD_LOG_TRUNCATION,
            "max_epsilon_computed": PLD_MAX_EPSILON,
        },
        "cases": cases,
    }
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
