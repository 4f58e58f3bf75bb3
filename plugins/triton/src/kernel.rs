//! A Triton kernel instance: `create` binds the call's dtypes to compiled variants and loads
//! their functions; `launch` checks the concrete tensors against the entry's rules, evaluates
//! the grid and the argument mapping, picks the aligned specialization when every hinted value
//! is a multiple of 16, and launches on the host's stream (no allocation, no synchronization).

use crate::driver::{self, Function};
use crate::expr::Value;
use crate::manifest::{ArgType, KernelEntry, Variant};
use crate::registry::Registry;
use crate::rules::{self, Binding};
use rtllm_plugin_api::{
    Attrs, DeviceKind, InputView, Kernel, LaunchContext, OutputView, PluginError, TensorMeta, TensorView,
};

/// Largest grid along x, and along y or z.
const MAX_GRID: [i64; 3] = [i32::MAX as i64, 65535, 65535];

/// A loaded specialization.
struct Loaded {
    variant: Variant,
    f: Function,
}

/// An instance of one manifest entry for one dtype binding.
pub struct TritonKernel {
    entry: KernelEntry,
    attrs: Attrs,
    binding: Binding,
    aligned: Option<Loaded>,
    generic: Loaded,
}

fn fail(entry: &KernelEntry, msg: impl std::fmt::Display) -> PluginError {
    PluginError::new(format!("{} (triton kernel '{}'): {msg}", entry.op, entry.name))
}

impl TritonKernel {
    /// Loads the variants of `entry` for these inputs' dtypes into the current CUDA context.
    pub fn create(
        reg: &Registry,
        entry: &KernelEntry,
        inputs: &[TensorMeta],
        attrs: &Attrs,
    ) -> Result<Self, PluginError> {
        let binding = rules::bind(entry, inputs)?;
        let load = |aligned: bool| -> Result<Option<Loaded>, PluginError> {
            let Some(v) = entry.variants.iter().find(|v| v.types == binding && v.aligned == aligned) else {
                return Ok(None);
            };
            let image = reg
                .artifacts
                .files
                .get(&v.cubin)
                .ok_or_else(|| fail(entry, format!("cubin {} is missing", v.cubin)))?;
            let f = driver::function(&v.cubin, image, &v.symbol, v.shared).map_err(|e| e.context(&entry.op))?;
            Ok(Some(Loaded { variant: v.clone(), f }))
        };
        let generic = load(false)?.ok_or_else(|| {
            fail(entry, format!("no generic variant for {} (recompile with compile.py)", rules::fmt_binding(&binding)))
        })?;
        let aligned = load(true)?;
        Ok(TritonKernel { entry: entry.clone(), attrs: attrs.clone(), binding, aligned, generic })
    }
}

fn as_int(entry: &KernelEntry, what: &str, v: Value) -> Result<i64, PluginError> {
    match v {
        Value::Int(i) => Ok(i),
        Value::Bool(b) => Ok(i64::from(b)),
        v => Err(fail(entry, format!("{what} is {v}, not an integer"))),
    }
}

/// Packs one argument value into an 8-byte parameter slot.
pub fn pack(entry: &KernelEntry, name: &str, ty: ArgType, v: Value) -> Result<u64, PluginError> {
    let what = format!("argument {name}");
    Ok(match ty {
        ArgType::Ptr | ArgType::I64 => as_int(entry, &what, v)? as u64,
        ArgType::I32 => {
            let i = as_int(entry, &what, v)?;
            i32::try_from(i).map_err(|_| fail(entry, format!("{what} = {i} does not fit an i32")))? as u32 as u64
        }
        ArgType::U32 => {
            let i = as_int(entry, &what, v)?;
            u32::try_from(i).map_err(|_| fail(entry, format!("{what} = {i} does not fit a u32")))? as u64
        }
        ArgType::F32 => match v {
            Value::Float(f) => (f as f32).to_bits() as u64,
            Value::Int(i) => (i as f32).to_bits() as u64,
            v => return Err(fail(entry, format!("{what} is {v}, not a number"))),
        },
    })
}

impl Kernel for TritonKernel {
    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        let e = &self.entry;
        if ctx.device() != DeviceKind::Cuda {
            return Err(fail(e, format!("launched with a {} context; Triton kernels run on CUDA", ctx.device())));
        }
        if outputs.len() != e.outputs.len() {
            return Err(fail(e, format!("launch takes {} outputs, got {}", e.outputs.len(), outputs.len())));
        }
        let in_metas: Vec<TensorMeta> = inputs.iter().map(|a| a.meta().clone()).collect();
        if rules::bind(e, &in_metas)? != self.binding {
            return Err(fail(e, "input dtypes differ from the ones the kernel was created for"));
        }
        let want = rules::infer_entry(e, &in_metas, &self.attrs)?;
        for ((spec, got), want) in e.outputs.iter().zip(outputs.iter()).zip(&want) {
            if got.meta().dtype != want.dtype || got.meta().dims != want.dims || !got.meta().is_contiguous() {
                return Err(fail(e, format!("output {} is {}, expected contiguous {want}", spec.name, got.meta())));
            }
        }
        for (spec, a) in e.inputs.iter().zip(inputs.iter()) {
            if !a.meta().is_contiguous() {
                return Err(fail(e, format!("input {} {} is not contiguous", spec.name, a.meta())));
            }
        }
        // Addresses only: the compiled kernel reads the inputs and writes the outputs.
        let ins = e.inputs.iter().zip(inputs.iter()).map(|(s, a)| (s.name.as_str(), a.meta(), Some(a.as_ptr() as u64)));
        let outs = e.outputs.iter().zip(outputs.iter_mut()).map(|(s, a)| {
            let addr = a.as_mut_ptr() as u64;
            (s.name.as_str(), &*a.meta(), Some(addr))
        });
        let tensors = ins.chain(outs).collect();
        let scope = rules::scope(e, tensors, &self.attrs)?;
        let mut grid = [1u32; 3];
        for (k, (src, expr)) in e.grid.iter().enumerate() {
            let n = as_int(e, &format!("grid `{src}`"), scope.eval(expr).map_err(|err| fail(e, err))?)?;
            if !(0..=MAX_GRID[k]).contains(&n) {
                return Err(fail(e, format!("grid `{src}` = {n} is outside 0..={}", MAX_GRID[k])));
            }
            grid[k] = n as u32;
        }
        let mut values = Vec::with_capacity(e.args.len());
        let mut aligned = true;
        for a in &e.args {
            let v = scope.eval(&a.value).map_err(|err| fail(e, format!("argument {}: {err}", a.name)))?;
            if a.align16 {
                aligned &= matches!(v, Value::Int(i) if i % 16 == 0);
            }
            values.push(v);
        }
        let chosen = match (&self.aligned, aligned) {
            (Some(l), true) => l,
            _ => &self.generic,
        };
        let mut slots = Vec::with_capacity(e.args.len() + chosen.variant.trailing_null_args);
        for (a, v) in e.args.iter().zip(values) {
            slots.push(pack(e, &a.name, a.ty, v)?);
        }
        // Triton 3.x appends global- and profile-scratch pointers; the kernels need neither.
        slots.extend(std::iter::repeat_n(0u64, chosen.variant.trailing_null_args));
        if grid.contains(&0) {
            return Ok(());
        }
        let v = &chosen.variant;
        // SAFETY: the slots follow the compiled signature (manifest args in order, then the
        // trailing scratch pointers), and the pointers are the host's device tensors whose
        // shapes were checked against the entry's rules above.
        unsafe {
            driver::launch(chosen.f, (grid[0], grid[1], grid[2]), v.num_warps * 32, v.shared, ctx.stream(), &slots)
        }
        .map_err(|err| err.context(format_args!("{} (triton kernel '{}')", e.op, e.name)))
    }
}
