"""Float64 references for the layer tests, one per operation, written from Caffe's definitions
as plain numpy/Python loops: the layers' kernels are never called. Grouped by layer family
(vision, neuron, recurrent, utility, loss, normalization, common), and the solvers' update
rules."""
import math

import numpy as np


# --------------------------------------------------------------------------------------------
# vision

def conv_out(size, k, p, s, d):
    """Caffe's convolution output size: (size + 2p - (d(k - 1) + 1)) / s + 1, C division."""
    span = size + 2 * p - (d * (k - 1) + 1)
    return int(span / s) + 1            # truncates toward zero, as C does


def conv_ref(x, w, b, stride=(1, 1), pad=(0, 0), dil=(1, 1), group=1):
    """y[n,o,i,j] = b[o] + sum_{c in group(o), a, e} w[o,c,a,e] *
    x[n, c, i*sh - ph + a*dh, j*sw - pw + e*dw] (zero outside the image)."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    assert cg * group == c
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dil
    oh, ow = conv_out(h, kh, ph, sh, dh), conv_out(wd, kw, pw, sw, dw)
    og = o // group
    y = np.zeros((n, o, oh, ow))
    for oc in range(o):
        g = oc // og
        for i in range(oh):
            for j in range(ow):
                for ci in range(cg):
                    for a in range(kh):
                        iy = i * sh - ph + a * dh
                        if not 0 <= iy < h:
                            continue
                        for e in range(kw):
                            ix = j * sw - pw + e * dw
                            if 0 <= ix < wd:
                                y[:, oc, i, j] += w[oc, ci, a, e] * x[:, g * cg + ci, iy, ix]
        if b is not None:
            y[:, oc] += b[oc]
    return y


def deconv_ref(x, w, b, stride=(1, 1), pad=(0, 0), dil=(1, 1), group=1):
    """Transposed convolution as a scatter-add: input pixel (i, j) of channel c adds
    x * w[c] into the full output at stride spacing, which is then cropped by the pad."""
    n, c, h, wd = x.shape
    wc, og, kh, kw = w.shape
    assert wc == c
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dil
    o = og * group
    cg = c // group
    fh, fw = sh * (h - 1) + dh * (kh - 1) + 1, sw * (wd - 1) + dw * (kw - 1) + 1
    full = np.zeros((n, o, fh, fw))
    for ci in range(c):
        g = ci // cg
        for i in range(h):
            for j in range(wd):
                for a in range(kh):
                    for e in range(kw):
                        full[:, g * og:(g + 1) * og, i * sh + a * dh, j * sw + e * dw] += \
                            x[:, ci, i, j][:, None] * w[ci, :, a, e][None, :]
    y = full[:, :, ph:fh - ph, pw:fw - pw]
    if b is not None:
        y = y + np.asarray(b).reshape(1, -1, 1, 1)
    return y


def im2col_ref(x, k, s, p, d):
    """top[n, (c*kh + a)*kw + e, i, j] = x[n, c, i*sh - ph + a*dh, j*sw - pw + e*dw] (0 outside)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = k, s, p, d
    n, c, h, wd = x.shape
    oh, ow = conv_out(h, kh, ph, sh, dh), conv_out(wd, kw, pw, sw, dw)
    y = np.zeros((n, c * kh * kw, oh, ow))
    for ci in range(c):
        for a in range(kh):
            for e in range(kw):
                row = (ci * kh + a) * kw + e
                for i in range(oh):
                    for j in range(ow):
                        iy, ix = i * sh - ph + a * dh, j * sw - pw + e * dw
                        if 0 <= iy < h and 0 <= ix < wd:
                            y[:, row, i, j] = x[:, ci, iy, ix]
    return y


def pool_ref(x, k, s, p, method, ceil=True):
    """Caffe's MAX/AVE pooling: ceil (or floor) sizes; with any padding, a last window that
    would start at or after size + pad is dropped (both axes); AVE divides by the window
    clipped to [-pad, size + pad); MAX's mask is h*W + w of the first maximum in scan order.
    Returns (top, mask)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = k, s, p
    rnd = np.ceil if ceil else np.floor
    oh = int(rnd((h + 2 * ph - kh) / sh)) + 1
    ow = int(rnd((w + 2 * pw - kw) / sw)) + 1
    if ph or pw:
        if (oh - 1) * sh >= h + ph:
            oh -= 1
        if (ow - 1) * sw >= w + pw:
            ow -= 1
    y = np.zeros((n, c, oh, ow))
    mask = np.full((n, c, oh, ow), -1.0)
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * sh - ph, j * sw - pw
            h1, w1 = min(h0 + kh, h + ph), min(w0 + kw, w + pw)
            size = (h1 - h0) * (w1 - w0)
            h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
            win = x[:, :, h0:h1, w0:w1]
            if method == "AVE":
                y[:, :, i, j] = win.sum(axis=(2, 3)) / size
            else:
                flat = win.reshape(n, c, -1)
                arg = flat.argmax(axis=2)                      # first maximum in scan order
                y[:, :, i, j] = flat.max(axis=2)
                mask[:, :, i, j] = (h0 + arg // (w1 - w0)) * w + (w0 + arg % (w1 - w0))
    return y, mask


def stochastic_ref(x, kh, kw, sh, sw, oh, ow, rand=None):
    """Caffe's STOCHASTIC pooling (no padding). TEST (rand None): sum(x^2) / sum(x) over the
    window; TRAIN: the first window element whose running sum reaches rand * sum(x).
    Returns (top, mask)."""
    n, c, h, w = x.shape
    y = np.zeros((n, c, oh, ow))
    mask = np.zeros((n, c, oh, ow), dtype=np.int64)
    for a in range(n):
        for b in range(c):
            for i in range(oh):
                for j in range(ow):
                    hs, ws = i * sh, j * sw
                    win = [(iy, ix) for iy in range(hs, min(hs + kh, h))
                           for ix in range(ws, min(ws + kw, w))]
                    vals = np.array([x[a, b, iy, ix] for iy, ix in win])
                    if rand is None:
                        s = vals.sum()
                        y[a, b, i, j] = (vals ** 2).sum() / s if s > 0 else 0.0
                        continue
                    thres = rand[a, b, i, j] * vals.sum()
                    k = int(np.argmax(np.cumsum(vals) >= thres))
                    iy, ix = win[k]
                    y[a, b, i, j] = vals[k]
                    mask[a, b, i, j] = iy * w + ix
    return y, mask


def spp_ref(x, height, method):
    """Caffe's SPP: level l pools into 2^l bins with kernel = stride = ceil(size / bins) and
    pad (kernel * bins - size + 1) / 2; the levels are flattened and concatenated (one level:
    the pooled 4-D blob)."""
    n, _, h, w = x.shape
    outs = []
    for lv in range(height):
        bins = 2 ** lv
        kh, kw = int(np.ceil(h / bins)), int(np.ceil(w / bins))
        ph, pw = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        outs.append(pool_ref(x, (kh, kw), (kh, kw), (ph, pw), method)[0])
    if height == 1:
        return outs[0]
    return np.concatenate([o.reshape(n, -1) for o in outs], axis=1)


# --------------------------------------------------------------------------------------------
# neuron: written from the formulas (float64, elementwise)

def ref_relu(x, slope=0.0):
    return np.array([v if v > 0 else slope * v for v in x.ravel()]).reshape(x.shape)


def ref_elu(x, alpha=1.0):
    return np.array([v if v > 0 else alpha * (math.exp(v) - 1) for v in x.ravel()]
                    ).reshape(x.shape)


def ref_sigmoid(x):
    return np.array([1.0 / (1.0 + math.exp(-v)) if v > -700 else 0.0 for v in x.ravel()]
                    ).reshape(x.shape)


def ref_swish(x, beta=1.0):
    return x * ref_sigmoid(beta * x)


def ref_bnll(x):
    # log(1 + e^x) = x + log(1 + e^-x)
    return np.array([v + math.log1p(math.exp(-v)) if v > 0 else math.log1p(math.exp(v))
                     for v in x.ravel()]).reshape(x.shape)


def ref_power(x, power=1.0, scale=1.0, shift=0.0):
    return np.array([(shift + scale * v) ** power for v in x.ravel()]).reshape(x.shape)


def ref_exp(x, base=-1.0, scale=1.0, shift=0.0):
    b = math.e if base == -1 else base
    return np.array([b ** (shift + scale * v) for v in x.ravel()]).reshape(x.shape)


def ref_log(x, base=-1.0, scale=1.0, shift=0.0):
    return np.array([math.log(shift + scale * v) / (1.0 if base == -1 else math.log(base))
                     for v in x.ravel()]).reshape(x.shape)


def ref_prelu(x, slopes, shared):
    out = np.empty_like(x)
    for idx in np.ndindex(*x.shape):
        a = slopes.reshape(-1)[0] if shared else slopes[idx[1]]
        v = x[idx]
        out[idx] = v if v > 0 else a * v
    return out


# --------------------------------------------------------------------------------------------
# recurrent

def sig(x):
    return 1.0 / (1.0 + np.exp(-x))


# (one stream, one step at a time)
def ref_lstm(x, cont, W, b, Whc, Ws=None, xs=None, h0=None, c0=None):
    T, N = x.shape[:2]
    H = Whc.shape[1]
    X = x.reshape(T, N, -1)
    hs = np.zeros((T, N, H))
    hT = np.zeros((N, H))
    cT = np.zeros((N, H))
    for n in range(N):
        h = np.zeros(H) if h0 is None else h0[0, n].copy()
        c = np.zeros(H) if c0 is None else c0[0, n].copy()
        for t in range(T):
            k = cont[t, n]
            g = W @ X[t, n] + b + Whc @ (k * h)
            if Ws is not None:
                g = g + Ws @ xs[n].reshape(-1)
            i, f, o, gg = sig(g[:H]), sig(g[H:2 * H]), sig(g[2 * H:3 * H]), np.tanh(g[3 * H:])
            c = k * f * c + i * gg
            h = o * np.tanh(c)
            hs[t, n] = h
        hT[n], cT[n] = h, c
    return hs, hT[None], cT[None]


def ref_rnn(x, cont, Wxh, bh, Whh, Who, bo, Ws=None, xs=None, h0=None):
    T, N = x.shape[:2]
    H = Whh.shape[0]
    X = x.reshape(T, N, -1)
    out = np.zeros((T, N, H))
    hT = np.zeros((N, H))
    for n in range(N):
        h = np.zeros(H) if h0 is None else h0[0, n].copy()
        for t in range(T):
            a = Wxh @ X[t, n] + bh + Whh @ (cont[t, n] * h)
            if Ws is not None:
                a = a + Ws @ xs[n].reshape(-1)
            h = np.tanh(a)
            out[t, n] = np.tanh(Who @ h + bo)
        hT[n] = h
    return out, hT[None]


FLT_MIN = float(np.finfo(np.float32).tiny)     # SoftmaxWithLoss clamps log(p) here
LOG_THRESHOLD = 1e-20                          # Caffe's kLOG_THRESHOLD (loss_layer.hpp)


# -- utility -------------------------------------------------------------------------------
def softmax_ref(x, axis):
    """exp(x_c - max_c x) / sum_c exp(x_c - max_c x) along ``axis``, one row at a time."""
    xm = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    out = np.empty_like(xm)
    for idx in np.ndindex(*xm.shape[:-1]):
        row = [float(v) for v in xm[idx]]
        m = max(row)
        e = [math.exp(v - m) for v in row]
        s = sum(e)
        out[idx] = [v / s for v in e]
    return np.moveaxis(out, -1, axis)


def concat_ref(xs, axis):
    """Element-by-element placement: top[..., off + i, ...] = x_k[..., i, ...]."""
    shape = list(xs[0].shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    out = np.full(shape, np.nan)
    off = 0
    for x in xs:
        for idx in np.ndindex(*x.shape):
            j = list(idx)
            j[axis] += off
            out[tuple(j)] = x[idx]
        off += x.shape[axis]
    return out


def slice_ref(x, axis, bounds):
    """The pieces x[..., bounds[k]:bounds[k+1], ...], copied element by element."""
    outs = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        shape = list(x.shape)
        shape[axis] = b - a
        o = np.empty(shape)
        for idx in np.ndindex(*shape):
            src = list(idx)
            src[axis] += a
            o[idx] = x[tuple(src)]
        outs.append(o)
    return outs


def eltwise_ref(xs, op, coeff=None):
    out = np.empty(xs[0].shape)
    for idx in np.ndindex(*out.shape):
        vals = [float(x[idx]) for x in xs]
        if op == "SUM":
            c = coeff or [1.0] * len(xs)
            out[idx] = sum(ci * v for ci, v in zip(c, vals))
        elif op == "PROD":
            out[idx] = math.prod(vals)
        else:
            out[idx] = max(vals)
    return out


def crop_ref(x, ref_shape, axis, offsets):
    """bottom 0's dims before ``axis``, ``ref_shape``'s from it on; ``offsets`` per cropped
    axis."""
    shape = [x.shape[i] if i < axis else ref_shape[i] for i in range(x.ndim)]
    out = np.empty(shape)
    for idx in np.ndindex(*shape):
        src = [k + (offsets[i - axis] if i >= axis else 0) for i, k in enumerate(idx)]
        out[idx] = x[tuple(src)]
    return out


def tile_ref(x, axis, tiles):
    shape = list(x.shape)
    shape[axis] *= tiles
    out = np.empty(shape)
    for idx in np.ndindex(*shape):
        src = list(idx)
        src[axis] = idx[axis] % x.shape[axis]
        out[idx] = x[tuple(src)]
    return out


def reduction_ref(x, op, axis, coeff=1.0):
    lead = x.shape[:axis]
    out = np.empty(lead)
    for idx in np.ndindex(*lead):
        vals = [float(v) for v in np.asarray(x[idx]).ravel()]
        if op == "SUM":
            r = sum(vals)
        elif op == "ASUM":
            r = sum(abs(v) for v in vals)
        elif op == "SUMSQ":
            r = sum(v * v for v in vals)
        else:
            r = sum(vals) / len(vals)
        out[idx] = coeff * r
    return out


def argmax_pairs(values, k):
    """Caffe: sort (value, index) pairs with std::greater (equal values put the larger index
    first), keep the first k."""
    return sorted(((float(v), j) for j, v in enumerate(values)), reverse=True)[:k]


def argmax_ref(x, k, out_max_val, axis=None):
    """ArgMax's top: without ``axis`` (N, 1 or 2, k, 1...) with max(3, x.ndim) axes, indices
    then values; with ``axis`` the indices or the values along it."""
    if axis is None:
        n = x.shape[0]
        shape = [1] * max(3, x.ndim)
        shape[0], shape[1], shape[2] = n, 2 if out_max_val else 1, k
        out = np.zeros((n, shape[1], k))
        for i in range(n):
            for j, (v, idx) in enumerate(argmax_pairs(x[i].ravel(), k)):
                out[i, 0, j] = idx
                if out_max_val:
                    out[i, 1, j] = v
        return out.reshape(shape)
    xm = np.moveaxis(x, axis, -1)
    out = np.empty(xm.shape[:-1] + (k,))
    for idx in np.ndindex(*xm.shape[:-1]):
        out[idx] = [v if out_max_val else j for v, j in argmax_pairs(xm[idx], k)]
    return np.moveaxis(out, -1, axis)


# -- loss ----------------------------------------------------------------------------------
def class_view(x, axis):
    """(outer, inner, C) view of x with classes on ``axis``, plus outer and inner."""
    outer = int(np.prod(x.shape[:axis]))
    c = x.shape[axis]
    inner = int(np.prod(x.shape[axis + 1:]))
    return np.moveaxis(np.asarray(x, np.float64).reshape(outer, c, inner), 1, 2), outer, inner


def normalizer_ref(mode, outer, inner, valid):
    n = {"FULL": outer * inner, "VALID": valid, "BATCH_SIZE": outer, "NONE": 1}[mode]
    return max(1.0, float(n))


def softmax_loss_ref(x, lab, axis=1, ignore=None, mode="VALID", h=None, floor=FLT_MIN):
    """SoftmaxWithLoss (``h`` None: -log max(p_label, floor)) or InfogainLoss (``h``:
    -sum_k H[label, k] log max(p_k, floor)), normalised per Caffe's LossParameter.
    Returns (loss, gradient for a unit top diff, probabilities)."""
    xv, outer, inner = class_view(x, axis)
    labv = np.asarray(lab, np.float64).reshape(outer, inner)
    c = xv.shape[2]
    hh = np.eye(c) if h is None else np.asarray(h, np.float64)
    prob = np.zeros_like(xv)
    grad = np.zeros_like(xv)
    loss, valid = 0.0, 0
    for i in range(outer):
        for j in range(inner):
            p = softmax_ref(xv[i, j], 0)
            prob[i, j] = p
            l = int(labv[i, j])                      # Caffe's static_cast<int>
            if ignore is not None and l == ignore:
                continue
            for k in range(c):
                loss -= hh[l, k] * math.log(max(p[k], floor))
                grad[i, j, k] = p[k] * hh[l].sum() - hh[l, k]
            valid += 1
    norm = normalizer_ref(mode, outer, inner, valid)

    def back(a):
        return np.moveaxis(a, 2, 1).reshape(x.shape)
    return loss / norm, back(grad) / norm, back(prob)


def sigmoid_ce_ref(x, t, ignore=None, mode="BATCH_SIZE"):
    """Returns (loss, gradient for a unit top diff, flat)."""
    x = np.asarray(x, np.float64).ravel()
    tt = np.asarray(t, np.float64).ravel()
    loss, valid = 0.0, 0
    grad = np.zeros_like(x)
    for i, (xi, ti) in enumerate(zip(x, tt)):
        if ignore is not None and int(ti) == ignore:       # Caffe casts the target to int
            continue
        p = 1.0 / (1.0 + math.exp(-xi))
        loss -= ti * math.log(p) + (1 - ti) * math.log(1 - p)
        grad[i] = p - ti
        valid += 1
    n = np.asarray(t).shape[0]
    norm = normalizer_ref(mode, n, x.size // n, valid)
    return loss / norm, grad / norm


def hinge_ref(x, lab, norm):
    """Returns (loss, gradient for a unit top diff)."""
    n = x.shape[0]
    xr = x.reshape(n, -1)
    loss = 0.0
    grad = np.zeros_like(xr)
    for i in range(n):
        for k in range(xr.shape[1]):
            y = 1.0 if k == int(lab[i]) else -1.0
            m = max(0.0, 1.0 - y * xr[i, k])
            loss += m if norm == "L1" else m * m
            dm = -y if m > 0 else 0.0
            grad[i, k] = dm if norm == "L1" else 2 * m * dm
    return loss / n, grad.reshape(x.shape) / n


def contrastive_ref(a, b, y, margin, legacy):
    """Returns (loss, gradient of the first bottom as (N, features), unit top diff)."""
    n = a.shape[0]
    y = np.asarray(y).ravel()
    loss = 0.0
    ga = np.zeros((n, a[0].size))
    for i in range(n):
        diff = (a[i] - b[i]).ravel()
        d2 = float(diff @ diff)
        d = math.sqrt(d2)
        if int(y[i]):
            loss += d2
            ga[i] = diff / n
        elif legacy:
            loss += max(margin - d2, 0.0)
            ga[i] = -diff / n if margin - d2 > 0 else 0.0
        else:
            loss += max(margin - d, 0.0) ** 2
            # d/da (m - d)^2 / 2N = -(m - d) / d * diff / N (Caffe adds 1e-4 to d)
            ga[i] = -(margin - d) / d * diff / n if margin - d > 0 else 0.0
    return loss / (2 * n), ga


def accuracy_ref(x, lab, k, axis=1, ignore=None):
    """Caffe: correct iff fewer than k *other* classes score >= the true class (ties count
    against the label); per-class accuracy = correct / count for that class (0 if none)."""
    xv, outer, inner = class_view(x, axis)
    labv = np.asarray(lab, np.float64).reshape(outer, inner)
    c = xv.shape[2]
    correct = count = 0
    per_ok, per_n = np.zeros(c), np.zeros(c)
    for i in range(outer):
        for j in range(inner):
            l = int(labv[i, j])
            if ignore is not None and l == ignore:
                continue
            s = xv[i, j]
            ok = sum(1 for q in range(c) if q != l and s[q] >= s[l]) < k
            correct += ok
            count += 1
            per_ok[l] += ok
            per_n[l] += 1
    acc = correct / count if count else 0.0
    per = np.where(per_n > 0, per_ok / np.maximum(per_n, 1), 0.0)
    return acc, per


# -- normalization, common, and the solvers' update rules --------------------------------

def update_rule_ref(kind, grads, lrs, iters, p):
    """Per step: the update Δ of one param, and the (first, second) moments afterwards."""
    mu, mu2, delta, rho = float(p.momentum), float(p.momentum2), float(p.delta), float(p.rms_decay)
    a = np.zeros_like(grads[0])          # v, h, or m
    b = np.zeros_like(grads[0])          # h2 (AdaDelta), v (Adam)
    out = []
    for g, lr, it in zip(grads, lrs, iters):
        if kind == "SGD":
            a = mu * a + lr * g
            d = a
        elif kind == "Nesterov":
            old = a
            a = mu * a + lr * g
            d = (1 + mu) * a - mu * old
        elif kind == "AdaGrad":
            a = a + g ** 2
            d = lr * g / (np.sqrt(a) + delta)
        elif kind == "RMSProp":
            a = rho * a + (1 - rho) * g ** 2
            d = lr * g / (np.sqrt(a) + delta)
        elif kind == "AdaDelta":
            a = mu * a + (1 - mu) * g ** 2
            u = g * np.sqrt((b + delta) / (a + delta))
            b = mu * b + (1 - mu) * u ** 2
            d = lr * u
        elif kind == "Adam":
            t = it + 1
            a = mu * a + (1 - mu) * g
            b = mu2 * b + (1 - mu2) * g ** 2
            d = lr * math.sqrt(1 - mu2 ** t) / (1 - mu ** t) * a / (np.sqrt(b) + delta)
        out.append((d.copy(), a.copy(), b.copy()))
    return out


# -- normalization: LRN, BatchNorm, MVN --------------------------------------------------------

def lrn_ref(x, size, alpha, beta, k, across):
    """ACROSS_CHANNELS: y = x * (k + alpha/n * sum_{|c'-c| <= (n-1)/2} x[c']^2)^-beta, channels
    outside [0, C) count as zero.  WITHIN_CHANNEL (Caffe: square -> AVE pool n x n, stride 1,
    pad (n-1)/2 -> power(shift 1, scale alpha) -> product): y = x * (1 + alpha/n^2 *
    sum_{n x n patch inside the image} x^2)^-beta; k plays no part."""
    n, c, h, w = x.shape
    half = (size - 1) // 2
    y = np.zeros_like(x, dtype=np.float64)
    for ni in range(n):
        for ci in range(c):
            for hi in range(h):
                for wi in range(w):
                    s = 0.0
                    if across:
                        for cc in range(ci - half, ci + half + 1):
                            if 0 <= cc < c:
                                s += float(x[ni, cc, hi, wi]) ** 2
                        scale = k + alpha / size * s
                    else:
                        for hh in range(hi - half, hi + half + 1):
                            for ww in range(wi - half, wi + half + 1):
                                if 0 <= hh < h and 0 <= ww < w:
                                    s += float(x[ni, ci, hh, ww]) ** 2
                        scale = 1.0 + alpha / (size * size) * s
                    y[ni, ci, hi, wi] = float(x[ni, ci, hi, wi]) * scale ** -beta
    return y


def bn_stats(x):
    """Per-channel (axis 1) mean and biased variance over every other axis, float64, plus m."""
    x = np.asarray(x, np.float64)
    c = 1 if x.ndim == 1 else x.shape[1]
    xr = np.moveaxis(x.reshape(x.shape[0], c, -1), 1, 0).reshape(c, -1)
    mean = np.array([sum(row) / len(row) for row in xr])
    var = np.array([sum((v - mu) ** 2 for v in row) / len(row) for row, mu in zip(xr, mean)])
    return mean, var, xr.shape[1]


def bn_apply(x, mean, var, eps):
    x = np.asarray(x, np.float64)
    shape = (1, -1) + (1,) * (x.ndim - 2) if x.ndim > 1 else (-1,)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)


def bn_backward_ref(y, dy, var, eps):
    """Caffe: dx = (dy - mean(dy) - mean(dy * y) * y) / sqrt(var + eps), means per channel."""
    axes = (0,) + tuple(range(2, y.ndim))
    shape = (1, -1) + (1,) * (y.ndim - 2)
    return (dy - dy.mean(axis=axes, keepdims=True)
            - (dy * y).mean(axis=axes, keepdims=True) * y) / np.sqrt(var.reshape(shape) + eps)


def mvn_ref(x, normalize_variance, across_channels, eps):
    """Per item (across_channels) or per (item, channel): subtract the mean and, with
    normalize_variance, divide by sqrt(biased variance) + eps (Caffe adds eps after the root)."""
    x = np.asarray(x, np.float64)
    rows = x.reshape(x.shape[0], -1) if across_channels or x.ndim < 2 \
        else x.reshape(x.shape[0] * x.shape[1], -1)
    out = np.empty_like(rows)
    for r, row in enumerate(rows):
        mu = sum(row) / len(row)
        cen = row - mu
        if normalize_variance:
            sd = np.sqrt(sum(cen * cen) / len(row))
            cen = cen / (sd + eps)
        out[r] = cen
    return out.reshape(x.shape)


# -- common: InnerProduct, Embed, Scale, Bias --------------------------------------------------

def ip_ref(x, w, b, axis, transpose):
    """y[m, n] = sum_k x[m, k] W[n, k] + b[n] with x flattened at ``axis`` (W[k, n] when
    transposed), as explicit sums."""
    m = int(np.prod(x.shape[:axis]))
    xr = x.reshape(m, -1)
    k = xr.shape[1]
    n = w.shape[1] if transpose else w.shape[0]
    y = np.zeros((m, n))
    for i in range(m):
        for j in range(n):
            acc = b[j] if b is not None else 0.0
            for q in range(k):
                acc += xr[i, q] * (w[q, j] if transpose else w[j, q])
            y[i, j] = acc
    return y.reshape(x.shape[:axis] + (n,))


def broadcast_ref(x, operand, axis, op):
    """y[idx] = x[idx] (*|+) operand[idx[axis:axis + operand.ndim]], element by element."""
    y = np.empty_like(x, dtype=np.float64)
    k = np.ndim(operand)
    for idx in np.ndindex(*x.shape):
        o = operand[idx[axis:axis + k]] if k else operand[()]
        y[idx] = x[idx] * o if op == "mul" else x[idx] + o
    return y


def reduce_ref(values, x_shape, axis, k):
    """sum over every position of bottom[0] of ``values`` into the operand's (k axes) shape."""
    out = np.zeros(x_shape[axis:axis + k])
    for idx in np.ndindex(*x_shape):
        out[idx[axis:axis + k]] += values[idx]
    return out
