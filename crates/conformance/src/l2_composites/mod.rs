//! L2: every composite, forward AND backward, as the port runs it (fused kernel or default
//! decomposition) against the default decomposition on `ref`; a fused composite is also
//! checked against its own decomposition on the same port. f32 and bf16, odd shapes, GQA and
//! causal attention with T<S and T>S (queries with no visible key), ignored targets, -inf rows.
//!
//! Both sides get identical inputs: saved statistics a backward consumes (mean, rstd, lse,
//! the attention output) are computed once from the stored inputs (on the host in f64, or by
//! the forward on `ref`), never by each side's own forward, so that the bounds in
//! [`crate::tolerance::composite`] measure the composite alone. The cases, one function per
//! family, are in [`cases`].

mod attention_terms;
mod cases;

use crate::harness::{compare_bounded, error_row, supports};
use crate::report::{Level, Row};
use crate::tolerance::{self, Bound};
use anychip_port::{Composite, DType, Port, PortError, Result, View};
use anychip_test_support::transfer;

/// One composite call on any port, named for the report.
pub(crate) struct Case {
    /// e.g. "softmax fwd bf16 [3,17]".
    name: String,
    /// Dtype of the case's main inputs (the check is unsupported where the port lacks it).
    dt: DType,
    make: Box<MakeCall>,
    /// For outputs whose products take rounded operands ([`Bound::Rounded`]): the magnitudes
    /// of each output element's terms, one Vec per output in [`Composite::outputs`] order.
    terms: Option<Box<dyn Fn() -> Vec<Vec<f64>>>>,
}

/// Builds a case's call (inputs uploaded, outputs zeroed) on one port.
type MakeCall = dyn Fn(&On) -> Result<Composite>;

impl Case {
    fn new(name: String, dt: DType, make: impl Fn(&On) -> Result<Composite> + 'static) -> Case {
        Case { name, dt, make: Box::new(make), terms: None }
    }
    /// The same case checked under [`Bound::Rounded`] with these term magnitudes.
    fn with_terms(self, terms: impl Fn() -> Vec<Vec<f64>> + 'static) -> Case {
        Case { terms: Some(Box::new(terms)), ..self }
    }
}

/// Uploads to one port in the dtype of the case.
pub(crate) struct On<'a> {
    p: &'a dyn Port,
    dt: DType,
}

impl On<'_> {
    /// `v` as the case's dtype, contiguous `shape`.
    fn x(&self, v: &[f32], shape: &[usize]) -> Result<View> {
        transfer::upload_contiguous(self.p, v, self.dt, shape)
    }
    /// `v` as F32 (saved statistics, scales, mixed-precision operands).
    fn f32(&self, v: &[f32], shape: &[usize]) -> Result<View> {
        transfer::upload_contiguous(self.p, v, DType::F32, shape)
    }
    /// Token ids or targets.
    fn ids(&self, v: &[i32]) -> Result<View> {
        transfer::upload_ints(self.p, v, &[v.len()])
    }
    /// A zeroed output in the case's dtype.
    fn out(&self, shape: &[usize]) -> Result<View> {
        transfer::zeros(self.p, self.dt, shape)
    }
    /// A zeroed F32 output.
    fn out_f32(&self, shape: &[usize]) -> Result<View> {
        transfer::zeros(self.p, DType::F32, shape)
    }
}

/// Every output of `call` on `p`: (name, dtype, values).
type Outputs = Vec<(String, DType, Vec<f64>)>;

fn outputs(p: &dyn Port, call: &Composite) -> Result<Outputs> {
    call.outputs().into_iter().map(|(n, v)| Ok((n.to_string(), v.dtype, transfer::download(p, v)?))).collect()
}

/// Build the case on `p` and run it: fused where the port has it (`fused_path`), else the
/// default decomposition.
fn run_case(p: &dyn Port, case: &Case, fused_path: bool) -> Result<(Composite, Outputs)> {
    let call = (case.make)(&On { p, dt: case.dt })?;
    if fused_path {
        anychip_decomp::dispatch(p, &call)?;
    } else {
        anychip_decomp::run(p, &call)?;
    }
    let out = outputs(p, &call)?;
    Ok((call, out))
}

/// Rows comparing each of `got`'s outputs with `want`'s, each under its family's bound for
/// its dtype (widened by the rounded operands' terms where the case has them).
fn compare_outputs(family: &str, case: &Case, label: &str, got: &Outputs, want: &Outputs) -> Vec<Row> {
    if got.len() != want.len() {
        let e = PortError::Invalid(format!("{} outputs, want {}", got.len(), want.len()));
        return vec![error_row(Level::L2, family, case.dt, &format!("{} {label}", case.name), &e)];
    }
    let terms = case.terms.as_ref().map(|f| f());
    got.iter()
        .zip(want)
        .enumerate()
        .map(|(i, ((name, dt, g), (_, _, w)))| {
            let tol = tolerance::composite(family, *dt);
            let (bound, m) = match &terms {
                Some(t) => {
                    let per_magnitude = tolerance::rounded_operands(case.dt);
                    (Bound::Rounded { tol, per_magnitude }, t.get(i).map_or(&[][..], |m| &m[..]))
                }
                None => (Bound::Fixed(tol), &[][..]),
            };
            compare_bounded(Level::L2, family, case.dt, &format!("{} ({name}) {label}", case.name), g, w, bound, m)
        })
        .collect()
}

/// The rows of one case: against `ref`, and for a fused family against the port's own
/// decomposition too.
fn check_case(p: &dyn Port, r: &dyn Port, fused: &[&str], case: &Case) -> Vec<Row> {
    let (family, want) = match run_case(r, case, false) {
        Ok((call, w)) => (call.name(), w),
        Err(e) => {
            let e = PortError::Invalid(format!("ref failed: {e}"));
            return vec![error_row(Level::L2, "composite", case.dt, &case.name, &e)];
        }
    };
    let got = match run_case(p, case, true) {
        Ok((_, got)) => got,
        Err(e) => return vec![error_row(Level::L2, family, case.dt, &format!("{} vs ref", case.name), &e)],
    };
    let mut rows = compare_outputs(family, case, "vs ref", &got, &want);
    if fused.contains(&family) {
        match run_case(p, case, false) {
            Ok((_, own)) => rows.extend(compare_outputs(family, case, "fused vs own decomposition", &got, &own)),
            Err(e) => rows.push(error_row(Level::L2, family, case.dt, &format!("{} own decomposition", case.name), &e)),
        }
    }
    rows
}

pub fn run(p: &dyn Port, r: &dyn Port) -> Vec<Row> {
    let fused = p.capabilities().fused;
    cases::all().iter().filter(|case| supports(p, case.dt)).flat_map(|case| check_case(p, r, &fused, case)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every direction of every composite family has at least one case (34 directions).
    #[test]
    fn cases_cover_every_composite_direction() {
        let r = anychip_port_ref::new();
        let mut seen = BTreeSet::new();
        for case in cases::all() {
            match (case.make)(&On { p: &r, dt: case.dt }) {
                Ok(call) => {
                    seen.insert(format!("{call:?}").split([' ', '{', '(']).next().unwrap_or("").to_string());
                }
                Err(e) => panic!("{}: {e}", case.name),
            }
        }
        assert_eq!(seen.len(), 34, "directions covered: {seen:?}");
    }
}
