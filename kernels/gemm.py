"""gemm(a, b, out): every kernel's matrix product, out = a @ b, on the process's BLAS.

The calling convention of np.dot(a, b, out) for 2-D arrays: a (M, K) and b (K, N) each
C-contiguous or a transpose of a C-contiguous array (Numba layout "C" or "F"), out
(M, N) C-contiguous; returns out. It makes the same BLAS calls as Numba's np.dot (a dot
product for M = N = 1, a matrix-vector product for M = 1 or N = 1, else a matrix
product, with the same transpose flags and leading dimensions), so with the OpenBLAS
backend the results are np.dot's, bit for bit. The layout is resolved at compile time.

The BLAS functions are declared by fixed names (bptt_sgemm, ...) that kernels/blas.py
binds to the chosen library when this module is imported, so Numba's on-disk cache
holds no library address: a cached kernel runs on whichever backend the process chose.
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.core.imputils import impl_ret_borrowed
from numba.core.typing import signature
from numba.extending import intrinsic

from kernels import blas

BACKEND = blas.load()  # binds bptt_* before any kernel that calls them is compiled or loaded

_INT = ir.IntType(32)  # Fortran INTEGER of an LP64 BLAS
_CHAR = ir.IntType(8)


def _blas_function(builder, prefix, routine, float_type, returns=None):
    """Declare bptt_<s|d><routine>, every argument a pointer (Fortran convention)."""
    pointer = float_type.as_pointer()
    arguments = {
        "gemm": [_CHAR.as_pointer()] * 2 + [_INT.as_pointer()] * 3
        + [pointer, pointer, _INT.as_pointer(), pointer, _INT.as_pointer(), pointer, pointer, _INT.as_pointer()],
        "gemv": [_CHAR.as_pointer()] + [_INT.as_pointer()] * 2
        + [pointer, pointer, _INT.as_pointer(), pointer, _INT.as_pointer(), pointer, pointer, _INT.as_pointer()],
        "dot": [_INT.as_pointer(), pointer, _INT.as_pointer(), pointer, _INT.as_pointer()],
    }[routine]
    function_type = ir.FunctionType(returns or ir.VoidType(), arguments)
    return cgutils.get_or_insert_function(builder.module, function_type, f"bptt_{prefix}{routine}")


def _slot(builder, llvm_type, value):
    """A stack slot (allocated once, in the entry block) holding `value`."""
    slot = cgutils.alloca_once(builder, llvm_type)
    builder.store(value if isinstance(value, ir.Value) else ir.Constant(llvm_type, value), slot)
    return slot


def _int_slot(builder, value):
    return _slot(builder, _INT, builder.trunc(value, _INT))


def _matrix_product(builder, dtype_prefix, float_type, a_layout, b_layout, shapes, data):
    """The BLAS call of Numba's np.dot(a, b, out) for out (M, N) C-contiguous, M, N > 1 or
    not: as numba.np.linalg.dot_3_mm, so that the same library gives the same bits."""
    (m, k), (_, n) = shapes[0], shapes[1]
    a_data, b_data, out_data = data
    one, zero = _slot(builder, float_type, 1.0), _slot(builder, float_type, 0.0)
    transposed = _slot(builder, _CHAR, ord("t"))
    as_is = _slot(builder, _CHAR, ord("n"))
    unit = _slot(builder, _INT, 1)

    def leading(layout, rows_cols):  # the inner dimension in memory
        return rows_cols[1] if layout == "C" else rows_cols[0]

    is_left_vector = builder.icmp_signed("==", m, m.type(1))
    is_right_vector = builder.icmp_signed("==", n, n.type(1))
    with builder.if_else(is_right_vector) as (right_vector, right_matrix):
        with right_vector:
            with builder.if_else(is_left_vector) as (vector_vector, matrix_vector):
                with vector_vector:  # (1, K) x (K, 1)
                    dot = _blas_function(builder, dtype_prefix, "dot", float_type, returns=float_type)
                    value = builder.call(dot, (_int_slot(builder, k), a_data, unit, b_data, unit))
                    builder.store(value, out_data)
                with matrix_vector:  # (M, K) x (K, 1): a as a column-major matrix
                    _gemv(builder, dtype_prefix, float_type, a_layout == "C", a_layout, (m, k), a_data, b_data,
                          out_data, (one, zero, unit, transposed, as_is))
        with right_matrix:
            with builder.if_else(is_left_vector) as (vector_matrix, matrix_matrix):
                with vector_matrix:  # (1, K) x (K, N)
                    _gemv(builder, dtype_prefix, float_type, b_layout != "C", b_layout, (k, n), b_data, a_data,
                          out_data, (one, zero, unit, transposed, as_is))
                with matrix_matrix:  # column-major view: out^T (N, M) = b^T (N, K) x a^T (K, M)
                    function = _blas_function(builder, dtype_prefix, "gemm", float_type)
                    builder.call(function, (
                        transposed if b_layout != "C" else as_is, transposed if a_layout != "C" else as_is,
                        _int_slot(builder, n), _int_slot(builder, m), _int_slot(builder, k), one,
                        b_data, _int_slot(builder, leading(b_layout, (k, n))),
                        a_data, _int_slot(builder, leading(a_layout, (m, k))),
                        zero, out_data, _int_slot(builder, n)))


def _gemv(builder, dtype_prefix, float_type, transpose, layout, shape, matrix, vector, out, constants):
    """y = op(A) x as numba.np.linalg.call_xxgemv: A of `shape` in `layout`, seen column-major."""
    one, zero, unit, transposed, as_is = constants
    rows, cols = shape if layout == "F" else shape[::-1]
    leading = shape[0] if layout == "F" else shape[1]
    function = _blas_function(builder, dtype_prefix, "gemv", float_type)
    builder.call(function, (transposed if transpose else as_is, _int_slot(builder, rows), _int_slot(builder, cols),
                            one, matrix, _int_slot(builder, leading), vector, unit, zero, out, unit))


@intrinsic
def gemm(typingctx, a, b, out):
    """out[:] = a @ b on the process's BLAS (see the module docstring); returns out.

    An intrinsic: its code, shape check included, is emitted in the calling kernel. As a
    jitted function of its own (one that can raise, so its calls were not inlined and
    counted references to its three arrays around each) a call cost 0.05-0.08 us more
    (1 x 1 x 64: 0.085 against 0.031 us; 8 x 32 x 128: 0.52 against 0.44), and the cold
    compile is the same."""
    for name, array in (("a", a), ("b", b), ("out", out)):
        if not isinstance(array, types.Array) or array.ndim != 2 or array.layout not in "CF":
            raise TypingError(f"gemm: {name} must be a 2-D C-contiguous array or the transpose of one, got {array}")
    if out.layout != "C" or not out.mutable:
        raise TypingError(f"gemm: out must be a writable C-contiguous array, got {out}")
    if not (a.dtype == b.dtype == out.dtype) or a.dtype not in (types.float32, types.float64):
        raise TypingError(f"gemm: a, b and out must all be float32 or all float64, got {a.dtype}, {b.dtype}, "
                          f"{out.dtype}")

    def codegen(context, builder, sig, args):
        arrays = [cgutils.create_struct_proxy(ty)(context, builder, value=value) for ty, value in zip(sig.args, args)]
        shapes = [cgutils.unpack_tuple(builder, array.shape, 2) for array in arrays]
        float_type = context.get_value_type(a.dtype)
        data = [builder.bitcast(array.data, float_type.as_pointer()) for array in arrays]
        m, k, n = shapes[0][0], shapes[0][1], shapes[1][1]
        _check_shapes(context, builder, shapes)
        zero = m.type(0)
        empty = builder.or_(builder.icmp_signed("==", k, zero),
                            builder.or_(builder.icmp_signed("==", m, zero), builder.icmp_signed("==", n, zero)))
        with builder.if_else(empty, likely=False) as (when_empty, otherwise):
            with when_empty:  # nothing to sum over: zeros, as np.dot
                cgutils.memset(builder, arrays[2].data, builder.mul(arrays[2].itemsize, arrays[2].nitems), 0)
            with otherwise:
                prefix = "s" if a.dtype == types.float32 else "d"
                _matrix_product(builder, prefix, float_type, a.layout, b.layout, shapes, data)
        return impl_ret_borrowed(context, builder, sig.return_type, args[2])

    return signature(out, a, b, out), codegen


def _check_shapes(context, builder, shapes):
    """Raise ValueError unless a (M, K), b (K, N) and out (M, N) agree, as np.dot does."""
    (m, k), (k_b, n), (out_m, out_n) = shapes
    for mismatch, message in (
            (builder.icmp_signed("!=", k, k_b), "incompatible array sizes for gemm(a, b, out) (matrix * matrix)"),
            (builder.or_(builder.icmp_signed("!=", out_m, m), builder.icmp_signed("!=", out_n, n)),
             "incompatible output array size for gemm(a, b, out) (matrix * matrix)")):
        with cgutils.if_unlikely(builder, mismatch):
            context.call_conv.return_user_exc(builder, ValueError, (message,))
