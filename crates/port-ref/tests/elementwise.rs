use anychip_port::{BinaryOp, CompareOp, DType, Port, UnaryOp};
use anychip_test_support::*;

fn unary(op: UnaryOp, x: &[f32]) -> Vec<f32> {
    let p = anychip_port_ref::new();
    let xv = tensor(&p, x, DType::F32, &[x.len()]);
    let out = output(&p, DType::F32, &[x.len()]);
    p.unary(op, &xv, &out).unwrap();
    get(&p, &out)
}

#[test]
fn unary_ops_on_closed_form_values() {
    let inf = f32::INFINITY;
    assert_same(&unary(UnaryOp::Neg, &[1.5, 0.0, -inf]), &[-1.5, -0.0, inf]);
    assert_same(&unary(UnaryOp::Exp, &[0.0, 1.0, -inf, inf]), &[1.0, std::f32::consts::E, 0.0, inf]);
    assert_same(&unary(UnaryOp::Log, &[1.0, 2.0, 0.0, -1.0]), &[0.0, std::f32::consts::LN_2, -inf, f32::NAN]);
    assert_same(&unary(UnaryOp::Sqrt, &[4.0, 2.0, -0.0, -1.0]), &[2.0, std::f32::consts::SQRT_2, -0.0, f32::NAN]);
    assert_same(&unary(UnaryOp::Recip, &[4.0, 0.0, -0.0, inf]), &[0.25, inf, -inf, 0.0]);
    assert_same(&unary(UnaryOp::Tanh, &[0.0, -0.0, inf, -inf]), &[0.0, -0.0, 1.0, -1.0]);
    // erf(0.5) = 0.520499877813046537682746653892 (Abramowitz & Stegun table 7.1).
    assert_same(&unary(UnaryOp::Erf, &[0.0, 0.5, inf, -inf]), &[0.0, 0.520_499_9, 1.0, -1.0]);
    assert_same(&unary(UnaryOp::Abs, &[-0.0, -3.0, -inf]), &[0.0, 3.0, inf]);
    // NaN goes through every op.
    for op in UnaryOp::ALL {
        assert!(unary(op, &[f32::NAN])[0].is_nan(), "{op:?}");
    }
}

#[test]
fn tanh_is_correctly_rounded_from_its_definition() {
    // tanh(x) = (e^2x - 1)/(e^2x + 1); at x = ln 2 / 2 that is exactly 1/3.
    let x = (2.0f64.ln() / 2.0) as f32;
    let want = ((2.0 * x as f64).exp() - 1.0) / ((2.0 * x as f64).exp() + 1.0);
    assert_same(&unary(UnaryOp::Tanh, &[x]), &[want as f32]);
}

fn binary(op: BinaryOp, a: &[f32], b: &[f32]) -> Vec<f32> {
    let p = anychip_port_ref::new();
    let (av, bv) = (tensor(&p, a, DType::F32, &[a.len()]), tensor(&p, b, DType::F32, &[b.len()]));
    let out = output(&p, DType::F32, &[a.len()]);
    p.binary(op, &av, &bv, &out).unwrap();
    get(&p, &out)
}

#[test]
fn binary_arithmetic_and_ieee_specials() {
    let (inf, nan) = (f32::INFINITY, f32::NAN);
    assert_same(&binary(BinaryOp::Add, &[1.0, inf, -0.0], &[2.0, -inf, -0.0]), &[3.0, nan, -0.0]);
    assert_same(&binary(BinaryOp::Sub, &[1.0, 0.0], &[3.0, 0.0]), &[-2.0, 0.0]);
    assert_same(&binary(BinaryOp::Mul, &[1.5, 0.0, -2.0], &[-2.0, inf, 0.0]), &[-3.0, nan, -0.0]);
    assert_same(&binary(BinaryOp::Div, &[1.0, 1.0, 0.0], &[3.0, -0.0, 0.0]), &[1.0 / 3.0, -inf, nan]);
}

#[test]
fn max_and_min_propagate_nan_and_order_signed_zeros() {
    let nan = f32::NAN;
    let a = [1.0, nan, 2.0, -0.0, 0.0];
    let b = [2.0, 5.0, nan, 0.0, -0.0];
    assert_same(&binary(BinaryOp::Max, &a, &b), &[2.0, nan, nan, 0.0, 0.0]);
    assert_same(&binary(BinaryOp::Min, &a, &b), &[1.0, nan, nan, -0.0, -0.0]);
}

#[test]
fn binary_broadcasts_by_stride_zero_and_rounds_bf16_outputs() {
    let p = anychip_port_ref::new();
    // [[1,2,3],[4,5,6]] + column vector [10, 20] broadcast along columns.
    let a = tensor(&p, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], DType::F32, &[2, 3]);
    let col = restride(&tensor(&p, &[10.0, 20.0], DType::F32, &[2]), &[2, 3], &[1, 0], 0);
    let out = output(&p, DType::F32, &[2, 3]);
    p.binary(BinaryOp::Add, &a, &col, &out).unwrap();
    assert_same(&get(&p, &out), &[11.0, 12.0, 13.0, 24.0, 25.0, 26.0]);

    // 1 + 2^-8 in bf16 is a tie that rounds to even (1.0); 1 + 2^-7 is representable.
    let one = bf16_bits(&p, &[0x3f80, 0x3f80], &[2]);
    let small = tensor(&p, &[1.0 / 256.0, 1.0 / 128.0], DType::F32, &[2]);
    let out = output(&p, DType::BF16, &[2]);
    p.binary(BinaryOp::Add, &one, &small, &out).unwrap();
    assert_same(&get(&p, &out), &[1.0, 1.0078125]);
}

#[test]
fn in_place_update_with_identical_layout() {
    let p = anychip_port_ref::new();
    let x = tensor(&p, &[1.0, -2.0], DType::F32, &[2]);
    p.unary(UnaryOp::Neg, &x, &x).unwrap();
    assert_same(&get(&p, &x), &[-1.0, 2.0]);
}

#[test]
fn compare_is_false_on_nan_and_equal_on_signed_zeros() {
    let p = anychip_port_ref::new();
    let a = tensor(&p, &[1.0, f32::NAN, -0.0, 2.0], DType::F32, &[4]);
    let b = tensor(&p, &[1.0, f32::NAN, 0.0, 3.0], DType::F32, &[4]);
    let out = output(&p, DType::BF16, &[4]);
    p.compare(CompareOp::Eq, &a, &b, &out).unwrap();
    assert_same(&get(&p, &out), &[1.0, 0.0, 1.0, 0.0]);
    p.compare(CompareOp::Lt, &a, &b, &out).unwrap();
    assert_same(&get(&p, &out), &[0.0, 0.0, 0.0, 1.0]);
}

#[test]
fn select_picks_a_where_cond_is_nonzero_including_nan() {
    let p = anychip_port_ref::new();
    let c = tensor(&p, &[1.0, 0.0, f32::NAN, -0.0], DType::F32, &[4]);
    let a = tensor(&p, &[1.0, 2.0, 3.0, 4.0], DType::F32, &[4]);
    let b = tensor(&p, &[-1.0, -2.0, -3.0, -4.0], DType::F32, &[4]);
    let out = output(&p, DType::F32, &[4]);
    p.select(&c, &a, &b, &out).unwrap();
    assert_same(&get(&p, &out), &[1.0, -2.0, 3.0, -4.0]);
}

#[test]
fn elementwise_rejects_mismatched_shapes_and_integer_operands() {
    let p = anychip_port_ref::new();
    let x = tensor(&p, &[1.0, 2.0], DType::F32, &[2]);
    assert_invalid(p.binary(BinaryOp::Add, &x, &tensor(&p, &[1.0; 3], DType::F32, &[3]), &x), "does not match");
    let i = ints(&p, &[1, 2], &[2]);
    assert_invalid(p.unary(UnaryOp::Exp, &i, &x), "not a float dtype");
    assert_invalid(p.unary(UnaryOp::Exp, &x, &i), "not a float dtype");
}
