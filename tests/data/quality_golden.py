#!/usr/bin/env python3
"""Golden vectors for the quality schemes (docs/format.md 5.1 and 5.2), from numpy alone.

An independent implementation of the specification: it shares no code with the C library.
Writes tests/data/quality_*.bin, which tests/quality/test_golden_quality.c checks bit for bit
(packed bytes, scales, zero points and the dequantized floats).

File format (little-endian): b"AQGQ", u32 version (1), u32 scheme (1 affine_search,
2 kquant: super-blocks over the flattened tensor, 3 kquant_rows: super-blocks row by row,
the layout of format version 1), u32 bits, u32 rows, u32 cols, u32 group_size, u32 has_importance, then
f32[rows*cols] input, f32[rows*cols] importance (if has_importance), u32 packed_len,
u8[packed_len] packed, u32 groups, f32[groups] scales, f32[groups] zero_points,
f32[rows*cols] dequantized.

Regenerate with: .venv/bin/python tests/data/quality_golden.py
Check the committed files against a fresh run: add --check (exit status 1 on a difference).
"""
import os
import struct
import sys
import tempfile

import numpy as np

F32 = np.float32
FLT_MIN = F32(2.0**-126)
FLT_MAX = float(np.finfo(np.float32).max)


def lane_sum(terms):
    """docs/format.md 5.1 block sums: eight double lanes, then a fixed tree."""
    t = np.asarray(terms, dtype=np.float64)
    pad = (-len(t)) % 8
    t = np.concatenate([t, np.zeros(pad)]).reshape(-1, 8)
    lanes = np.zeros(8)
    for row in t:
        lanes = lanes + row
    l = [float(v) for v in lanes]
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))


def code(v, qmax):
    v = np.asarray(v, dtype=F32)
    v = np.where(v > F32(0), v, F32(0)).astype(F32)  # NaN -> 0
    v = np.where(v < F32(qmax), v, F32(qmax)).astype(F32)
    return np.rint(v).astype(F32)


def search(x, w, bits, lo, hi, first, step, centred, offset_le0):
    qmax = (1 << bits) - 1
    W = w.astype(np.float64)
    X = x.astype(np.float64)
    sw = lane_sum(W)
    sx = lane_sum(W * X)
    sxx = lane_sum((W * X) * X)
    rng = float(hi) - float(lo)
    best = None
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        for c in range(16):
            levels = float(qmax) + first + c * step
            inv = F32(levels / rng)
            if np.isinf(inv):
                continue
            off = F32((levels - qmax) / 2.0) if centred else F32(0.0)
            q = code(((x - lo) * inv) - off, qmax)
            Q = q.astype(np.float64)
            sq = lane_sum(W * Q)
            sqq = lane_sum((W * Q) * Q)
            sxq = lane_sum((W * X) * Q)
            det = sw * sqq - sq * sq
            if not det > 0:
                continue
            s = (sw * sxq - sq * sx) / det
            m = (sx - s * sq) / sw
            if offset_le0 and m > 0:
                m = 0.0
                s = sxq / sqq
            if not (s > 0 and np.isfinite(s) and np.isfinite(m)):
                continue
            e = sxx - (2 * s) * sxq - (2 * m) * sx + (s * s) * sqq + ((2 * s) * m) * sq + (m * m) * sw
            if best is None or e < best[0]:
                best = (e, s, m)
    return None if best is None else (best[1], best[2])


def affine_params(lo, hi, bits):
    """docs/format.md section 3."""
    qmax = (1 << bits) - 1
    if hi == lo:
        return F32(1.0), F32(0.0), F32(-lo)
    s = F32((float(hi) - float(lo)) / qmax)
    if not s >= FLT_MIN:
        s = FLT_MIN
    return s, F32(F32(1.0) / s), F32(-float(lo) / float(s))


def search_group(x, w, bits):
    qmax = (1 << bits) - 1
    lo = F32(x.min() + F32(0.0))
    hi = F32(x.max() + F32(0.0))
    if hi != lo:
        fit = search(x, w, bits, lo, hi, 0.0, 0.25 if bits == 2 else 0.125, True, False)
        if fit is not None:
            s, m = fit
            scale = F32(s)
            if not scale >= FLT_MIN:
                scale = FLT_MIN
            with np.errstate(over="ignore"):
                zp = F32(-m / float(scale))
            with np.errstate(over="ignore", invalid="ignore"):
                lo_end = (F32(0.0) - zp) * scale
                hi_end = (F32(qmax) - zp) * scale
            if (np.isfinite(scale) and np.isfinite(zp) and np.isfinite(lo_end)
                    and np.isfinite(hi_end)):
                inv = F32(F32(1.0) / scale)
                with np.errstate(over="ignore"):
                    q = code(x * inv + zp, qmax)
                return q, scale, zp
    scale, inv, zp = affine_params(lo, hi, bits)
    with np.errstate(over="ignore"):
        q = code((x - lo) * inv, qmax)
    return q, scale, zp


def pack_codes(codes, bits):
    out = np.zeros((len(codes) * bits + 7) // 8, dtype=np.uint8)
    for k, q in enumerate(codes):
        bit = k * bits
        out[bit // 8] |= np.uint8(int(q) << (bit % 8))
    return out


def quantize_search(x2d, w2d, bits, g):
    rows, cols = x2d.shape
    codes, scales, zps = [], [], []
    for r in range(rows):
        for j in range(0, cols, g):
            q, s, z = search_group(x2d[r, j:j + g], w2d[r, j:j + g], bits)
            codes.extend(q.astype(np.int64))
            scales.append(s)
            zps.append(z)
    scales = np.array(scales, dtype=F32)
    zps = np.array(zps, dtype=F32)
    codes = np.array(codes)
    deq = np.zeros(rows * cols, dtype=F32)
    gpr = -(-cols // g)
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        gi = r * gpr + c // g
        deq[k] = (F32(codes[k]) - zps[gi]) * scales[gi]
    return pack_codes(codes, bits).tobytes(), scales, zps, deq


# ---- kquant (docs/format.md 5.2) ----

def kq_geometry(bits):
    return (16, 4) if bits == 2 else (32, 6)


def seq_sum(terms):
    """docs/format.md 5.2 sums: float32, from +0, adding the terms in element order."""
    t = np.concatenate([np.zeros(1, dtype=F32), np.asarray(terms, dtype=F32)])
    return F32(np.add.accumulate(t, dtype=F32)[-1])


def kq_codes(x, a, b, qmax):
    inv = F32(F32(1.0) / a) if a > F32(0) else F32(0.0)
    return code((x + b) * inv, qmax)


def kq_sub_error(x, w, qmax, d, dmin, sc, mc):
    a = F32(d * F32(sc))
    b = F32(dmin * F32(mc))
    q = kq_codes(x, a, b, qmax)
    r = (x - (a * q - b).astype(F32)).astype(F32)
    return seq_sum((w * r) * r)


def kq_search(x, w, qmax, lo, hi, sw, sx, sxx):
    """docs/format.md 5.2 step 1: 8 candidates anchored at lo, offset <= 0."""
    rng = float(hi) - float(lo)
    SW, SX, SXX = float(sw), float(sx), float(sxx)
    best = None
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        for c in range(8):
            levels = float(qmax) - 1.0 + c * 0.25
            inv = F32(levels / rng)
            if np.isinf(inv):
                continue
            q = code((x - lo) * inv, qmax)
            SQ = float(seq_sum(w * q))
            SQQ = float(seq_sum((w * q) * q))
            SXQ = float(seq_sum((w * x) * q))
            det = SW * SQQ - SQ * SQ
            if not det > 0:
                continue
            s = (SW * SXQ - SQ * SX) / det
            m = (SX - s * SQ) / SW
            if m > 0:
                m = 0.0
                s = SXQ / SQQ
            if not (s > 0 and np.isfinite(s) and np.isfinite(m)):
                continue
            e = SXX - (2 * s) * SXQ - (2 * m) * SX + (s * s) * SQQ + ((2 * s) * m) * SQ + (m * m) * SW
            if best is None or e < best[0]:
                best = (e, s, m)
    return None if best is None else (best[1], best[2])


def kq_super(x, w, bits):
    S, P = kq_geometry(bits)
    K = (1 << P) - 1
    qmax = (1 << bits) - 1
    L = len(x)
    J = -(-L // S)
    s = [0.0] * J
    m = [0.0] * J
    tw = [F32(0)] * J
    tx = [F32(0)] * J
    with np.errstate(over="ignore", invalid="ignore"):
        for j in range(J):
            xs, ws = x[j * S:(j + 1) * S], w[j * S:(j + 1) * S]
            lo = xs.min()
            lo = F32((lo if lo < F32(0) else F32(0)) + F32(0))
            hi = F32(xs.max() + F32(0))
            tw[j] = seq_sum(ws)
            tx[j] = seq_sum(ws * xs)
            sxx = seq_sum((ws * xs) * xs)
            if hi <= lo:
                s[j], m[j] = 0.0, float(lo)
                continue
            fit = kq_search(xs, ws, qmax, lo, hi, tw[j], tx[j], sxx)
            if fit is None:
                s[j], m[j] = (float(hi) - float(lo)) / qmax, float(lo)
            else:
                s[j], m[j] = fit
    smax = max([0.0] + s)
    mmax = max([0.0] + [-v for v in m])
    d = F32(0.0)
    dmin = F32(0.0)
    if smax > 0:
        d = F32(smax / K)
        d = d if d >= FLT_MIN else FLT_MIN
    if mmax > 0:
        dmin = F32(mmax / K)
        dmin = dmin if dmin >= FLT_MIN else FLT_MIN
    sc = [min(float(np.rint(s[j] / float(d))), K) if d > 0 else 0 for j in range(J)]
    mc = [min(float(np.rint(-m[j] / float(dmin))), K) if dmin > 0 else 0 for j in range(J)]
    sc = [int(v) for v in sc]
    mc = [int(v) for v in mc]
    # step 3: refinement
    with np.errstate(over="ignore", invalid="ignore"):
        for j in range(J):
            xs, ws = x[j * S:(j + 1) * S], w[j * S:(j + 1) * S]
            s0, m0 = sc[j], mc[j]
            bs, bm = s0, m0
            best = kq_sub_error(xs, ws, qmax, d, dmin, s0, m0)
            for ds in (-1, 0, 1):
                for dm in (-1, 0, 1):
                    cs, cm = s0 + ds, m0 + dm
                    if (ds == 0 and dm == 0) or cs < 0 or cm < 0 or cs > K or cm > K:
                        continue
                    e = kq_sub_error(xs, ws, qmax, d, dmin, cs, cm)
                    if e < best:
                        best, bs, bm = e, cs, cm
            sc[j], mc[j] = bs, bm

    def all_codes(d, dmin):
        out = []
        for j in range(J):
            a = F32(d * F32(sc[j]))
            b = F32(dmin * F32(mc[j]))
            out.append(kq_codes(x[j * S:(j + 1) * S], a, b, qmax))
        return np.concatenate(out)

    # steps 4 and 5: codes, one refit from per-sub-block float32 sums, new codes
    q = all_codes(d, dmin)
    saa = sab = sbb = sxa = sxb = 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        for j in range(J):
            xs, ws, qs = x[j * S:(j + 1) * S], w[j * S:(j + 1) * S], q[j * S:(j + 1) * S]
            tq = float(seq_sum(ws * qs))
            tqq = float(seq_sum((ws * qs) * qs))
            txq = float(seq_sum((ws * xs) * qs))
            Sd, Bd = float(sc[j]), float(mc[j])
            saa += (Sd * Sd) * tqq
            sab += (Sd * Bd) * tq
            sbb += (Bd * Bd) * float(tw[j])
            sxa += Sd * txq
            sxb += Bd * float(tx[j])
    refit = None
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        det = saa * sbb - sab * sab
        if det > 0:
            refit = ((sxa * sbb - sab * sxb) / det, (sab * sxa - saa * sxb) / det)
        elif sbb == 0 and saa > 0:
            refit = (sxa / saa, float(dmin))
    if refit is not None:
        nd, ne = refit
        if nd > 0 and ne >= 0 and np.isfinite(nd) and np.isfinite(ne):
            with np.errstate(over="ignore"):
                fd = F32(nd)
                fe = F32(ne)
            if not fd >= FLT_MIN:
                fd = FLT_MIN
            if not (np.isinf(fd) or np.isinf(fe)):
                d, dmin = fd, fe
                q = all_codes(d, dmin)
    # parameter area
    nbytes = (2 * J * P + 7) // 8
    meta = np.zeros(nbytes, dtype=np.uint8)
    bitpos = 0
    for j in range(J):
        for v in (sc[j], mc[j]):
            for k in range(P):
                if (v >> k) & 1:
                    meta[(bitpos + k) // 8] |= np.uint8(1 << ((bitpos + k) % 8))
            bitpos += P
    deq = np.concatenate([
        (F32(d * F32(sc[j])) * q[j * S:(j + 1) * S] - F32(dmin * F32(mc[j]))).astype(F32)
        for j in range(J)])
    return q, d, dmin, meta, deq


def quantize_kquant(x2d, w2d, bits, flat):
    if flat:
        # Super-blocks over the flattened tensor: one row of all the elements.
        x2d, w2d = x2d.reshape(1, -1), w2d.reshape(1, -1)
    rows, cols = x2d.shape
    codes, scales, zps, metas, deqs = [], [], [], [], []
    for r in range(rows):
        for j in range(0, cols, 512):
            q, d, dmin, meta, deq = kq_super(x2d[r, j:j + 512], w2d[r, j:j + 512], bits)
            codes.extend(q.astype(np.int64))
            scales.append(d)
            zps.append(dmin)
            metas.append(meta)
            deqs.append(deq)
    packed = pack_codes(codes, bits).tobytes() + b"".join(m.tobytes() for m in metas)
    return (packed, np.array(scales, dtype=F32), np.array(zps, dtype=F32),
            np.concatenate(deqs))


def write_case(path, scheme, bits, x2d, w2d, has_imp, g):
    rows, cols = x2d.shape
    if scheme == 1:
        packed, scales, zps, deq = quantize_search(x2d, w2d, bits, g)
    else:
        packed, scales, zps, deq = quantize_kquant(x2d, w2d, bits, scheme == 2)
        g = 512
    with open(path, "wb") as f:
        f.write(b"AQGQ")
        f.write(struct.pack("<7I", 1, scheme, bits, rows, cols, g, 1 if has_imp else 0))
        f.write(x2d.astype("<f4").tobytes())
        if has_imp:
            f.write(w2d.astype("<f4").tobytes())
        f.write(struct.pack("<I", len(packed)))
        f.write(packed)
        f.write(struct.pack("<I", len(scales)))
        f.write(scales.astype("<f4").tobytes())
        f.write(zps.astype("<f4").tobytes())
        f.write(deq.astype("<f4").tobytes())


def make_input(rng, rows, cols):
    x = (rng.standard_normal((rows, cols)) * 0.02).astype(F32)
    flat = x.reshape(-1)
    n = flat.size
    # Heavy tails, a constant run, values on the code grid (ties), a positive-only run.
    flat[rng.integers(0, n, max(1, n // 200))] = F32(0.4)
    flat[rng.integers(0, n, max(1, n // 200))] = F32(-0.4)
    if cols >= 80:
        x[0, 16:48] = F32(0.0125)
        x[-1, 48:80] = np.abs(x[-1, 48:80]) + F32(0.01)
        x[min(1, rows - 1), 0:40] = (np.arange(40) % 4).astype(F32) * F32(0.5)
    return x


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    check = "--check" in sys.argv[1:]
    out_dir = tempfile.mkdtemp() if check else here
    rng = np.random.default_rng(20261126)
    cases = []
    for bits in (2, 4, 8):
        cases.append(("search", 1, bits, (5, 200), 64, False))
        cases.append(("kquant", 2, bits, (3, 1100), 512, False))
    cases.append(("search", 1, 4, (3, 37), 16, True))
    cases.append(("search", 1, 2, (4, 96), 32, True))
    cases.append(("kquant", 2, 4, (2, 600), 512, True))
    cases.append(("kquant", 2, 2, (3, 7), 512, False))
    cases.append(("search", 1, 2, (2, 64), 32, False))  # huge values, see below
    cases.append(("kquant", 2, 4, (1, 2048), 512, False))  # whole super-blocks only
    for bits in (2, 4):
        cases.append(("kquant_rows", 3, bits, (3, 1100), 512, False))
    cases.append(("kquant_rows", 3, 4, (2, 600), 512, True))
    for name, scheme, bits, shape, g, imp in cases:
        x = make_input(rng, *shape)
        if shape == (2, 64):
            # Groups spanning most of the float32 range: fits that would overshoot it fall
            # back to the affine parameters (docs/format.md 5.1 step 3).
            x[0, 3], x[0, 9], x[1, 40], x[1, 41] = F32(3e38), F32(-3e38), F32(3.4e38), F32(-1e38)
        w = np.ones(shape, dtype=F32)
        if imp:
            w = rng.uniform(0.0, 4.0, shape).astype(F32)
            w.reshape(-1)[::7] = F32(0.0)
        fname = "quality_%s_b%d_%dx%d_g%d%s.bin" % (name, bits, shape[0], shape[1], g,
                                                    "_imp" if imp else "")
        write_case(os.path.join(out_dir, fname), scheme, bits, x, w, imp, g)
        if check:
            with open(os.path.join(out_dir, fname), "rb") as a, \
                    open(os.path.join(here, fname), "rb") as b:
                if a.read() != b.read():
                    print("differs:", fname)
                    return 1
            os.remove(os.path.join(out_dir, fname))
        else:
            print("wrote", fname)
    if check:
        os.rmdir(out_dir)
        print("all %d files match" % len(cases))
    return 0


if __name__ == "__main__":
    sys.exit(main())
