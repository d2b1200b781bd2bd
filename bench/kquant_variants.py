#!/usr/bin/env python3
"""Encoder variants of the two-level scheme, prototyped in numpy (float64, not bit-exact with
the kernels): how much relative RMSE each idea gains on bench/quality's four distributions,
before any of it is worth a format or kernel change (docs/schemes.md, "Lower error: what was
tried").

    .venv/bin/python bench/kquant_variants.py [--n 262144]

Variants (all at the format's bits per weight unless said):
  spec          docs/format.md 5.2 as written: 8 clipping candidates, (sc, mc) +-1, one refit
  cand32        32 candidates, levels qmax - 2 .. qmax + 1.875 in steps of 1/8
  refit4        the spec, then 3 more rounds of (codes, least-squares d and dmin)
  cand32+refit4+nbr2   both, and the (sc, mc) search over +-2
  nl16          a format change: 4 bits only, a fixed non-uniform 16-level grid (ggml's IQ4_NL
                values), symmetric, one 6-bit scale per 16 elements and a float32 d per 512:
                4 + 6/16 + 32/512 = 4.4375 bpw; the scale searched over 16 candidates
  lloyd16       the same with the Lloyd-Max 16-level grid of a Gaussian
"""
import argparse
import math

import numpy as np

SUPER = 512
NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
              np.float64) / 127.0


def dists(n, sigma=0.02):
    rng = np.random.default_rng(1)
    g = rng.normal(0, sigma, n)
    lap = rng.laplace(0, sigma / math.sqrt(2), n)
    out = rng.normal(0, sigma, n)
    u = rng.random(n)
    out[u < 0.0005] = 20 * sigma
    out[(u >= 0.0005) & (u < 0.001)] = -20 * sigma
    t3 = rng.standard_t(3, n) * sigma / math.sqrt(3)
    return {"gaussian": g, "laplace": lap, "outliers": out, "student-t3": t3}


def codes(x, a, b, qmax):
    inv = np.where(a > 0, 1.0 / np.where(a > 0, a, 1), 0.0)
    return np.clip(np.rint((x + b) * inv), 0, qmax)


def sub_fit(x, qmax, levels):
    """Step 1 over sub-blocks x [..., S]: best (s, m) with m <= 0 over the candidates."""
    lo = np.minimum(x.min(-1), 0.0)
    hi = x.max(-1)
    rng_ = np.where(hi > lo, hi - lo, 1.0)
    n = x.shape[-1]
    sx, sxx = x.sum(-1), (x * x).sum(-1)
    best_e = np.full(lo.shape, np.inf)
    best_s = (hi - lo) / qmax
    best_m = lo.copy()
    for lv in levels:
        q = np.clip(np.rint((x - lo[..., None]) * (lv / rng_)[..., None]), 0, qmax)
        sq, sqq, sxq = q.sum(-1), (q * q).sum(-1), (x * q).sum(-1)
        det = n * sqq - sq * sq
        ok = det > 0
        det = np.where(ok, det, 1)
        s = (n * sxq - sq * sx) / det
        m = (sx - s * sq) / n
        pos = m > 0
        s = np.where(pos, sxq / np.where(sqq > 0, sqq, 1), s)
        m = np.where(pos, 0.0, m)
        ok &= s > 0
        e = sxx - 2 * s * sxq - 2 * m * sx + s * s * sqq + 2 * s * m * sq + m * m * n
        better = ok & (e < best_e)
        best_e = np.where(better, e, best_e)
        best_s = np.where(better, s, best_s)
        best_m = np.where(better, m, best_m)
    return best_s, best_m


def kquant(x, bits, levels, refits=1, nbr=1):
    S = 16 if bits == 2 else 32
    K = 15 if bits == 2 else 63
    qmax = 2 ** bits - 1
    X = x.reshape(-1, SUPER // S, S)
    s, m = sub_fit(X, qmax, levels)
    d = np.maximum(s.max(-1), 0) / K
    dmin = np.maximum((-m).max(-1), 0) / K
    dd, mm = np.where(d > 0, d, 1)[:, None], np.where(dmin > 0, dmin, 1)[:, None]
    sc = np.minimum(np.rint(s / dd), K)
    mc = np.minimum(np.rint(-m / mm), K)
    # Step 3: the best (sc, mc) around the rounded ones.
    best = None
    bs, bm = sc.copy(), mc.copy()
    for ds in range(-nbr, nbr + 1):
        for dm in range(-nbr, nbr + 1):
            cs, cm = sc + ds, mc + dm
            valid = (cs >= 0) & (cs <= K) & (cm >= 0) & (cm <= K)
            a, b = (d[:, None] * cs)[..., None], (dmin[:, None] * cm)[..., None]
            q = codes(X, a, b, qmax)
            e = ((X - (a * q - b)) ** 2).sum(-1)
            if best is None:
                best = np.where(valid, e, np.inf)
                bs, bm = np.where(valid, cs, sc), np.where(valid, cm, mc)
                continue
            take = valid & (e < best)
            best = np.where(take, e, best)
            bs, bm = np.where(take, cs, bs), np.where(take, cm, bm)
    sc, mc = bs, bm
    for _ in range(refits):
        a, b = (d[:, None] * sc)[..., None], (dmin[:, None] * mc)[..., None]
        q = codes(X, a, b, qmax)
        A = sc[..., None] * q  # x ~ d * A - dmin * B
        B = np.broadcast_to(mc[..., None], q.shape)
        saa, sab, sbb = (A * A).sum((1, 2)), (A * B).sum((1, 2)), (B * B).sum((1, 2))
        sxa, sxb = (X * A).sum((1, 2)), (X * B).sum((1, 2))
        det = saa * sbb - sab * sab
        okd = det > 0
        det = np.where(okd, det, 1)
        nd = (sxa * sbb - sab * sxb) / det
        ne = (sab * sxa - saa * sxb) / det
        okd &= (nd > 0) & (ne >= 0)
        d, dmin = np.where(okd, nd, d), np.where(okd, ne, dmin)
    a, b = (d[:, None] * sc)[..., None], (dmin[:, None] * mc)[..., None]
    q = codes(X, a, b, qmax)
    return (a * q - b).ravel()


LLOYD = np.array([0.1284, 0.3881, 0.6568, 0.9424, 1.2562, 1.6181, 2.0690, 2.7326])
LLOYD = np.concatenate([-LLOYD[::-1], LLOYD]) / 2.7326


def nl16(x, ncand=16, grid=NL):
    """Non-uniform 4-bit grid, 16-element sub-blocks, 6-bit scales against a float32 d."""
    NL = grid
    X = x.reshape(-1, SUPER // 16, 16)
    amax = np.abs(X).max(-1)
    mid = (NL[1:] + NL[:-1]) / 2

    def quant(X, sc):  # nearest grid value of x / sc
        t = X / np.where(sc > 0, sc, 1)[..., None]
        return NL[np.searchsorted(mid, t)]

    best_e = np.full(amax.shape, np.inf)
    best_s = amax.copy()
    for c in range(ncand):
        sc = amax * (0.8 + 0.5 * c / ncand) / 1.0
        g = quant(X, sc)
        # Least-squares scale for the chosen levels.
        num, den = (X * g).sum(-1), (g * g).sum(-1)
        s = np.where(den > 0, num / np.where(den > 0, den, 1), 0)
        e = ((X - s[..., None] * g) ** 2).sum(-1)
        better = e < best_e
        best_e, best_s = np.where(better, e, best_e), np.where(better, s, best_s)
    d = best_s.max(-1) / 63
    k = np.clip(np.rint(best_s / np.where(d > 0, d, 1)[:, None]), 0, 63)
    sc = d[:, None] * k
    g = quant(X, sc)
    return (sc[..., None] * g).ravel()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1 << 18)
    ap.add_argument("--bits", type=int, nargs="+", default=[4, 2])
    args = ap.parse_args()
    spec = [2 ** 0 * 0 + c * 0.25 for c in range(8)]  # offsets from qmax - 1
    cand32 = [-1.0 + c * 0.125 for c in range(32)]
    rows = []
    for bits in args.bits:
        qmax = 2 ** bits - 1
        variants = {
            "spec": lambda x: kquant(x, bits, [qmax - 1 + o for o in spec]),
            "cand32": lambda x: kquant(x, bits, [qmax - 1 + o for o in cand32]),
            "refit4": lambda x: kquant(x, bits, [qmax - 1 + o for o in spec], refits=4),
            "cand32+refit4+nbr2": lambda x: kquant(x, bits, [qmax - 1 + o for o in cand32],
                                                   refits=4, nbr=2),
        }
        if bits == 4:
            variants["nl16 (4.4375 bpw)"] = nl16
            variants["lloyd16 (4.4375 bpw)"] = lambda x: nl16(x, grid=LLOYD)
        for name, dist in dists(args.n).items():
            for vname, fn in variants.items():
                y = fn(dist)
                rel = math.sqrt(((y - dist) ** 2).sum() / (dist ** 2).sum())
                rows.append((bits, name, vname, rel))
                print(f"| {bits} | {name} | {vname} | {rel:.4f} |", flush=True)


if __name__ == "__main__":
    print("| bits | distribution | variant | rel RMSE |\n|---|---|---|---|")
    main()
