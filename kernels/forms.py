"""Form tables: a kernel family's function compiled once per literal code and dtype, called by
address from a table instead of being compiled into every kernel that calls it.

A family (the activations, the losses) selects its work by a small integer code. Compiled as one
function with a branch per code, every code's loop is typed, optimised and linked into every
kernel that calls it, and then optimised again there, though a net uses one or two codes. Its
forms are instead compiled apart, one per (direction, dtype, code), the code a literal so that
only its branch is typed, the first time a net needs it (``FormTable.ensure``, also from the disk
cache). A kernel calls a form through an intrinsic (``FormTable.call``) that reads its address
from the family's table, a C array the JIT linker finds by a symbol named after the kernel
sources, so cached kernels find it in a new process. A slot stays 0 until ensured: the call then
reports the form absent, and the family's kernels write NaN where its output would go.
"""

import ctypes
import threading

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types

from . import views
from ._config import DIGEST, jit_inline

DTYPES = (types.float32, types.float64)


class FormTable:
    """The forms of one family: ``forms[direction]`` (jitted functions taking the code first),
    each for ``codes`` literal codes and both dtypes, returning ``returns`` (``types.none`` or a
    scalar type). ``argtypes(direction, dtype)`` gives the Numba types of a form's arguments after
    the code; arrays must match them (or be their read-only kind), integers are cast to them."""

    def __init__(self, family, forms, codes, argtypes, returns=types.none):
        self.forms, self.codes, self.argtypes, self.returns = forms, codes, argtypes, returns
        self.table = (ctypes.c_int64 * (len(forms) * len(DTYPES) * codes))()
        self.symbol = f"fastnn_{family}_forms_{DIGEST}"
        llvm.add_symbol(self.symbol, ctypes.addressof(self.table))
        self._lock = threading.Lock()

    def slot(self, direction, dtype, code):
        """The table index of a form; dtype a Numba float type."""
        return (direction * len(DTYPES) + DTYPES.index(dtype)) * self.codes + code

    def signature(self, direction, dtype, code):
        """The Numba argument types a form is compiled for."""
        return (types.IntegerLiteral(code), *self.argtypes(direction, dtype))

    def ensure(self, directions, codes, dtype):
        """Make these forms callable from the kernels in dtype (a NumPy dtype: float32 or
        float64), compiling or loading each that is not yet."""
        numba_dtype = numba.from_dtype(np.dtype(dtype))
        for code in set(int(c) for c in codes):
            for direction in directions:
                slot = self.slot(direction, numba_dtype, code)
                if self.table[slot]:
                    continue
                with self._lock:
                    if not self.table[slot]:
                        form, signature = self.forms[direction], self.signature(direction, numba_dtype, code)
                        form.compile(signature)
                        compiled = form.overloads[signature]
                        self.table[slot] = compiled.library.get_pointer_to_function(compiled.fndesc.llvm_func_name)

    def call(self, direction, code, args):
        """The typer of an intrinsic running form(code, *args) through the table: it returns
        whether the form was there (boolean), with the form's value after it when the forms
        return one ((boolean, value); the value is NaN when absent)."""
        first = args[0] if args else None
        if not (isinstance(code, types.Integer) and isinstance(first, types.Array) and first.dtype in DTYPES):
            return None
        argtypes = self.argtypes(direction, first.dtype)
        if len(args) != len(argtypes) or not all(map(_passes_as, args, argtypes)):
            return None
        base = self.slot(direction, first.dtype, 0)
        returns = self.returns
        result = types.boolean if returns == types.none else types.Tuple((types.boolean, returns))

        def codegen(context, builder, signature, values):
            i64 = ir.IntType(64)
            table = builder.module.globals.get(self.symbol)
            if table is None:
                table = ir.GlobalVariable(builder.module, ir.ArrayType(i64, len(self.table)), name=self.symbol)
            code64 = context.cast(builder, values[0], signature.args[0], types.int64)
            cast = [context.cast(builder, v, t, w) for v, t, w in zip(values[1:], signature.args[1:], argtypes)]
            present = cgutils.alloca_once_value(builder, cgutils.false_bit)
            value = None
            if returns != types.none:
                value = cgutils.alloca_once_value(builder, context.get_constant(returns, float("nan")))
            # A code outside [0, codes) takes the absent way instead of reading past the table.
            known = builder.icmp_unsigned("<", code64, ir.Constant(i64, self.codes))
            with builder.if_then(known, likely=True):
                address = builder.load(builder.gep(table, [ir.Constant(i64, 0), builder.add(code64, ir.Constant(i64, base))]))
                ready = builder.icmp_unsigned("!=", address, ir.Constant(i64, 0))
                builder.store(ready, present)
                with builder.if_then(ready, likely=True):
                    # the code's literal type is only the callee's: in the call it is a plain int64
                    form_types = [types.int64, *argtypes]
                    form_type = context.call_conv.get_function_type(returns, form_types)
                    form = builder.inttoptr(address, form_type.as_pointer())
                    _, out = context.call_conv.call_function(builder, form, returns, form_types, [code64, *cast])
                    if value is not None:
                        builder.store(out, value)
            if value is None:
                return builder.load(present)
            return context.make_tuple(builder, result, [builder.load(present), builder.load(value)])

        return result(code, *args), codegen


def _passes_as(given, wanted):
    """True if a value of Numba type ``given`` may be passed where a form takes ``wanted``: the
    same type, its read-only kind (the same data, as Numba's array cast does it), or, for an
    integer, any integer (cast)."""
    if isinstance(given, types.Integer):
        return isinstance(wanted, types.Integer)
    return given == wanted or (isinstance(given, types.Array) and given.copy(readonly=False) == wanted)


@jit_inline
def fill_nan(a):
    """Every element of a (C-contiguous) set to NaN: what a kernel writes for a form not ensured."""
    flat = views.whole(a)
    for i in range(flat.size):
        flat[i] = np.nan
