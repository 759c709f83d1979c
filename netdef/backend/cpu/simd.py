"""Eight-lane vector operations for Numba kernels, written as LLVM IR.

LLVM's loop vectoriser handles a plain loop 32 elements at a time (8 lanes, unrolled 4x), so
the 8- to 24-element rows of small feature maps ran scalar; these intrinsics do exactly one
8-lane step each and are called from loops over the row.  Arrays are contiguous, offsets are
in elements and unchecked (the caller keeps them in bounds); loads and stores are unaligned.

* :func:`copy8` -- ``dst[d:d+8] = src[s:s+8]``.
* :func:`bias_act_plane` -- a whole plane through :func:`store8` (and :func:`act`, its scalar
  lane, for the rest of each row).
* :func:`store8`, :func:`clean8`, :func:`max8`, :func:`add8` -- ``v = act(src[s:s+8] + bias)`` with
  ``act(v) = v * slope if v < 0 else v`` (slope 1: no activation), then ``dst[d:d+8] = v``,
  ``= v if v > dst else dst`` (``max``: NaN in dst is kept, NaN in v is not -- the scan of
  the pooling layers) or ``+= v``; ``v`` is converted to ``dst``'s float type (a float64
  accumulator for float32 data, or back); :func:`clean8` stores ``v`` with NaN replaced by
  -inf.
* :func:`store8s2`, :func:`max8s2`, :func:`add8s2` -- the same without bias or activation on
  every second element: ``v[i] = src[s + 2*i]`` (reads ``src[s:s+16]``).
"""
from __future__ import annotations

import llvmlite.binding as llb
from llvmlite import ir
from numba import njit, types
from numba import uint64 as U
from numba.extending import intrinsic

#: the host has AVX: a max is (v)maxps -- LLVM turns the portable compare + select + store
#: into a masked store (vmaskmovps), which AMD cores execute slowly
_X86_AVX = llb.get_process_triple().startswith(("x86_64", "i686")) and \
    "+avx" in llb.get_host_cpu_features().flatten()


def _vec_ptr(context, builder, arrtype, arr, off, lanes):
    a = context.make_array(arrtype)(context, builder, arr)
    vt = ir.VectorType(context.get_data_type(arrtype.dtype), lanes)
    return builder.bitcast(builder.gep(a.data, [off]), vt.as_pointer())


def _splat(builder, value, vt):
    v = builder.insert_element(ir.Constant(vt, ir.Undefined), value,
                               ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, ir.Constant(vt, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), vt.count), [0] * vt.count))


def _x86_max(builder, v, a):
    """``v > a ? v : a`` lane by lane with (v)maxps/(v)maxpd, whose operand order gives
    exactly that (NaN in either: ``a``)."""
    double = isinstance(v.type.element, ir.DoubleType)
    step = 4 if double else 8
    name = "llvm.x86.avx.max.pd.256" if double else "llvm.x86.avx.max.ps.256"
    ht = ir.VectorType(v.type.element, step)
    fn = builder.module.globals.get(name) or ir.Function(
        builder.module, ir.FunctionType(ht, [ht, ht]), name)
    parts = []
    for lo in range(0, v.type.count, step):
        idx = ir.Constant(ir.VectorType(ir.IntType(32), step), list(range(lo, lo + step)))
        hv = builder.shuffle_vector(v, ir.Constant(v.type, ir.Undefined), idx)
        ha = builder.shuffle_vector(a, ir.Constant(a.type, ir.Undefined), idx)
        parts.append(builder.call(fn, [hv, ha]))
    while len(parts) > 1:                      # concatenate the halves back
        joined = []
        for i in range(0, len(parts), 2):
            n = parts[i].type.count
            idx = ir.Constant(ir.VectorType(ir.IntType(32), 2 * n), list(range(2 * n)))
            joined.append(builder.shuffle_vector(parts[i], parts[i + 1], idx))
        parts = joined
    return parts[0]


def _combine(builder, mode, dp, v):
    if mode == "max":
        a = builder.load(dp, align=1)
        if _X86_AVX:
            v = _x86_max(builder, v, a)
        else:
            v = builder.select(builder.fcmp_ordered(">", v, a), v, a)
    elif mode == "clean":
        inf = ir.Constant(v.type, [float("-inf")] * v.type.count)
        v = builder.select(builder.fcmp_unordered("uno", v, v), inf, v)
    elif mode == "add":
        v = builder.fadd(builder.load(dp, align=1), v)
    builder.store(v, dp, align=1)


def _convert(builder, v, src_t, dst_t, lanes):
    if isinstance(dst_t, ir.DoubleType) and not isinstance(src_t, ir.DoubleType):
        return builder.fpext(v, ir.VectorType(dst_t, lanes))
    if isinstance(src_t, ir.DoubleType) and not isinstance(dst_t, ir.DoubleType):
        return builder.fptrunc(v, ir.VectorType(dst_t, lanes))
    return v


def _act_op(mode):
    @intrinsic
    def op(typingctx, dst, doff, src, soff, bias, slope):
        sig = types.void(dst, doff, src, soff, bias, slope)

        def codegen(context, builder, sig, args):
            d, do, s, so, b, sl = args
            st = context.get_data_type(sig.args[2].dtype)
            dt = context.get_data_type(sig.args[0].dtype)
            vt = ir.VectorType(st, 8)
            v = builder.load(_vec_ptr(context, builder, sig.args[2], s, so, 8), align=1)
            b = context.cast(builder, b, sig.args[4], sig.args[2].dtype)
            sl = context.cast(builder, sl, sig.args[5], sig.args[2].dtype)
            v = builder.fadd(v, _splat(builder, b, vt))
            neg = builder.fcmp_ordered("<", v, ir.Constant(vt, [0.0] * 8))
            v = builder.select(neg, builder.fmul(v, _splat(builder, sl, vt)), v)
            v = _convert(builder, v, st, dt, 8)
            _combine(builder, mode, _vec_ptr(context, builder, sig.args[0], d, do, 8), v)
            return context.get_dummy_value()
        return sig, codegen
    return op


def _stride2_op(mode):
    @intrinsic
    def op(typingctx, dst, doff, src, soff):
        sig = types.void(dst, doff, src, soff)

        def codegen(context, builder, sig, args):
            d, do, s, so = args
            st = context.get_data_type(sig.args[2].dtype)
            dt = context.get_data_type(sig.args[0].dtype)
            wide = builder.load(_vec_ptr(context, builder, sig.args[2], s, so, 16), align=1)
            even = ir.Constant(ir.VectorType(ir.IntType(32), 8), list(range(0, 16, 2)))
            v = builder.shuffle_vector(wide, ir.Constant(wide.type, ir.Undefined), even)
            v = _convert(builder, v, st, dt, 8)
            _combine(builder, mode, _vec_ptr(context, builder, sig.args[0], d, do, 8), v)
            return context.get_dummy_value()
        return sig, codegen
    return op


@intrinsic
def copy8(typingctx, dst, doff, src, soff):
    """dst[doff:doff+8] = src[soff:soff+8] (same dtype)."""
    sig = types.void(dst, doff, src, soff)

    def codegen(context, builder, sig, args):
        d, do, s, so = args
        v = builder.load(_vec_ptr(context, builder, sig.args[2], s, so, 8), align=1)
        builder.store(v, _vec_ptr(context, builder, sig.args[0], d, do, 8), align=1)
        return context.get_dummy_value()
    return sig, codegen


store8 = _act_op("store")
clean8 = _act_op("clean")
max8 = _act_op("max")
add8 = _act_op("add")
store8s2 = _stride2_op("store")
max8s2 = _stride2_op("max")
add8s2 = _stride2_op("add")


@njit(cache=True, nogil=True, inline="always")
def act(v, slope):
    """One lane of the intrinsics' activation: ``v * slope if v < 0 else v``."""
    if v < 0:
        return v * slope
    return v


@njit(cache=True, nogil=True)
def bias_act_plane(src, sb, rs, h, w, bias, slope, yf, yb):
    """yf[yb:yb + h*w] = act(plane + bias) for the (h, w) plane of ``src`` at ``sb`` whose rows
    are ``rs`` apart."""
    w8 = w - w % 8
    for iy in range(h):
        r = U(sb + iy * rs)
        d = U(yb + iy * w)
        for i in range(0, w8, 8):
            store8(yf, d + U(i), src, r + U(i), bias, slope)
        for i in range(w8, w):
            yf[d + U(i)] = act(src[r + U(i)] + bias, slope)
