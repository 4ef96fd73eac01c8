use anychip_port::{DType, Port, ReduceOp};
use anychip_test_support::*;

fn reduce(op: ReduceOp, x: &[f32], xs: &[usize], os: &[usize]) -> Vec<f32> {
    let p = anychip_port_ref::new();
    let xv = tensor(&p, x, DType::F32, xs);
    let out = output(&p, DType::F32, os);
    p.reduce(op, &xv, &out).unwrap();
    get(&p, &out)
}

#[test]
fn sums_over_each_axis_and_all_axes() {
    // [[1,2,3],[4,5,6]]: row sums 6, 15; column sums 5, 7, 9; total 21.
    let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    assert_same(&reduce(ReduceOp::Sum, &x, &[2, 3], &[2, 1]), &[6.0, 15.0]);
    assert_same(&reduce(ReduceOp::Sum, &x, &[2, 3], &[1, 3]), &[5.0, 7.0, 9.0]);
    assert_same(&reduce(ReduceOp::Sum, &x, &[2, 3], &[1, 1]), &[21.0]);
    assert_same(&reduce(ReduceOp::Sum, &x, &[2, 3], &[2, 3]), &x);
    assert_same(&reduce(ReduceOp::Max, &x, &[2, 3], &[2, 1]), &[3.0, 6.0]);
    // Rank 0 is a copy.
    assert_same(&reduce(ReduceOp::Sum, &[7.5], &[], &[]), &[7.5]);
}

#[test]
fn sum_accumulates_in_f64() {
    // In f32, 1e8 + 1 rounds back to 1e8 and the 1 is lost; f64 keeps it.
    assert_same(&reduce(ReduceOp::Sum, &[1e8, 1.0, -1e8], &[3], &[1]), &[1.0]);
    // Sum of 1..=1000 is 500500 exactly.
    let x: Vec<f32> = (1..=1000).map(|i| i as f32).collect();
    assert_same(&reduce(ReduceOp::Sum, &x, &[10, 100], &[1, 1]), &[500500.0]);
}

#[test]
fn empty_reductions_and_special_values() {
    assert_same(&reduce(ReduceOp::Sum, &[], &[2, 0], &[2, 1]), &[0.0, 0.0]);
    assert_same(&reduce(ReduceOp::Max, &[], &[2, 0], &[2, 1]), &[f32::NEG_INFINITY; 2]);
    let nan = f32::NAN;
    assert_same(&reduce(ReduceOp::Max, &[1.0, nan, 2.0, 3.0], &[2, 2], &[2, 1]), &[nan, 3.0]);
    assert_same(&reduce(ReduceOp::Max, &[-0.0, 0.0, -0.0, -0.0], &[2, 2], &[2, 1]), &[0.0, -0.0]);
    assert_same(&reduce(ReduceOp::Sum, &[f32::INFINITY, f32::NEG_INFINITY], &[2], &[1]), &[nan]);
}

#[test]
fn reduces_strided_views() {
    let p = anychip_port_ref::new();
    // Transposed view of [[1,2,3],[4,5,6]] is [[1,4],[2,5],[3,6]]: row sums 5, 7, 9.
    let x = tensor(&p, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], DType::F32, &[2, 3]);
    let t = restride(&x, &[3, 2], &[1, 3], 0);
    let out = output(&p, DType::BF16, &[3, 1]);
    p.reduce(ReduceOp::Sum, &t, &out).unwrap();
    assert_same(&get(&p, &out), &[5.0, 7.0, 9.0]);
}

#[test]
fn reduce_rejects_bad_shapes() {
    let p = anychip_port_ref::new();
    let x = tensor(&p, &[1.0; 6], DType::F32, &[2, 3]);
    assert_invalid(p.reduce(ReduceOp::Sum, &x, &output(&p, DType::F32, &[2])), "ranks must be equal");
    assert_invalid(p.reduce(ReduceOp::Sum, &x, &output(&p, DType::F32, &[2, 2])), "neither");
}
