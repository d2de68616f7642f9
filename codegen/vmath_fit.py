#!/usr/bin/env python3
"""vmath_fit.py — how the polynomial coefficients in codegen/vmath.c were computed.

Run `python3 codegen/vmath_fit.py` (numpy, mpmath); it prints each table as C. Not part
of the build: the numbers are pasted into vmath.c, and tests/unit/test_vmath.c measures
the result against libm.

Method: each function g is sampled on 1500–3000 Chebyshev nodes of its interval in the
polynomial's variable, with the exact values from mpmath at 40 digits (formulas with
removable singularities, like (e^r − 1 − r)/r², are evaluated there without
cancellation). The weighted minimax polynomial is found by Lawson's algorithm
(iteratively reweighted least squares, which converges to the discrete minimax fit).
Coefficients are then fixed to float32 one at a time, lowest degree first, refitting the
remaining higher ones after each rounding, so the rounding of c0 is partly absorbed by
the others. The weights are chosen so that the error fitted is the one that reaches the
final result (see each table).
"""
import re

import numpy as np
import mpmath as mp

mp.mp.dps = 40


def cheb_nodes(lo, hi, n):
    return np.array([(lo + hi) / 2 + (hi - lo) / 2 * np.cos(np.pi * (i + 0.5) / n) for i in range(n)])


def fit_f32(xs, fs, ws, deg, iters=150):
    """Minimax of max|ws·(p(x) − fs)| with float32 coefficients fixed lowest first."""
    V = np.vander(xs, deg + 1, increasing=True)
    fixed = []
    for j in range(deg + 1):
        resid = fs - (V[:, :j] @ np.array(fixed) if j else 0.0)
        Vr = V[:, j:]
        lam = np.full(len(xs), 1.0 / len(xs))
        for _ in range(iters):
            sw = np.sqrt(lam) * ws
            c, *_ = np.linalg.lstsq(Vr * sw[:, None], resid * sw, rcond=None)
            err = np.abs(ws * (Vr @ c - resid))
            lam = lam * err
            lam /= lam.sum()
        fixed.append(float(np.float32(c[0])))
    c = np.array(fixed)
    return c, np.abs(ws * (V @ c - fs)).max()


def show(name, what, c, err):
    print("/* %s: %s; max weighted error %.3g */" % (name, what, err))
    hexes = [re.sub(r"\.?0+p", "p", float(v).hex()) for v in c]
    print("static const double %s[%d] = {%s};" % (name, len(c), ", ".join(hexes)))


def main():
    # exp, expm1: e^r = 1 + r + r²·Q(r), |r| ≤ ln2/2 (with a margin for the rounding of
    # k). Q ≈ (e^r − 1 − r)/r²; error of Q reaches exp scaled by r² ≤ 0.12 and expm1 by
    # |r|, so plain absolute error is fitted. exp uses degree 4, expm1 degree 5.
    L = float(mp.log(2) / 2) * 1.0001
    rs = cheb_nodes(-L, L, 3000)
    Q = np.array([float((mp.exp(mp.mpf(r)) - 1 - r) / mp.mpf(r) ** 2) for r in rs])
    for deg, name in ((4, "EXP_Q"), (5, "EXPM1_Q")):
        c, e = fit_f32(rs, Q, np.ones(len(rs)), deg)
        show(name, "Q(r) = (e^r − 1 − r)/r², |r| ≤ ln2/2, degree %d" % deg, c, e)

    # log: m ∈ [√½, √2), f = m − 1, s = f/(2 + f), z = s² ≤ 0.0295;
    # log(1+f) = 2·atanh(s) = f − f²/2 + s·(f²/2 + R(z)) with R(z) = z·P(z). The error of
    # P reaches the result as s·z·δP ~ z^1.5·δP: that is the weight.
    smax = (2 ** 0.5 - 1) / (2 ** 0.5 + 1) * 1.001
    zs = cheb_nodes(1e-12, smax ** 2, 2000)
    P = np.array([float((2 * mp.atanh(mp.sqrt(z)) - 2 * mp.sqrt(z)) / mp.sqrt(z) / z) for z in map(mp.mpf, zs)])
    c, e = fit_f32(zs, P, zs ** 1.5, 2)
    show("LOG_P", "R(z)/z = (2·atanh(s) − 2s)/(s·z), z = s² ≤ 0.0295; weight z^1.5", c, e)

    # tanh, |x| < 0.55: tanh(a) = a + a³·T(a²); relative error a²·δT, weight w = a².
    A = 0.55 * 1.001
    ws = cheb_nodes(1e-12, A * A, 2000)
    T = np.array([float((mp.tanh(mp.sqrt(w)) - mp.sqrt(w)) / mp.sqrt(w) ** 3) for w in map(mp.mpf, ws)])
    c, e = fit_f32(ws, T, ws, 4)
    show("TANH_P", "(tanh a − a)/a³ in w = a², a ≤ 0.55; weight w", c, e)

    # erf, |x| < 0.5: erf(x) = x + x·E(x²), E = erf(x)/x − 1 (the x term is exact).
    X = 0.5 * 1.001
    ws = cheb_nodes(0.0, X * X, 2000)
    E = np.array([float(mp.erf(mp.sqrt(w)) / mp.sqrt(w) - 1) if w > 0 else float(2 / mp.sqrt(mp.pi) - 1)
                  for w in map(mp.mpf, ws)])
    c, e = fit_f32(ws, E, np.ones(len(ws)), 4)
    show("ERF_P", "erf(x)/x − 1 in w = x², |x| ≤ 0.5", c, e)

    # erfc, 0.5 ≤ a ≤ 10.3: erfc(a) = e^(−a²)·H(t)/(a + K), t = (a − K)/(a + K), K = 1.
    # H = erfc(a)·e^(a²)·(a + K) varies only between 0.6 and 1.1 and its Horner sum does
    # not cancel; K = 1 gave the smallest measured error of K in 0.5…5. Relative error.
    K, lo, hi = 1.0, 0.5, 10.3
    tlo, thi = (lo - K) / (lo + K), (hi - K) / (hi + K)
    ts = cheb_nodes(tlo, thi, 1500)
    As = K * (1 + ts) / (1 - ts)
    H = np.array([float(mp.erfc(mp.mpf(a)) * mp.exp(mp.mpf(a) ** 2) * (a + K)) for a in As])
    c, e = fit_f32(ts, H, 1 / H, 10)
    show("ERFC_H", "erfc(a)·e^(a²)·(a + 1) in t = (a − 1)/(a + 1), 0.5 ≤ a ≤ 10.3; relative", c, e)


if __name__ == "__main__":
    main()
