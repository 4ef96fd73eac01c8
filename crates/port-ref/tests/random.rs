use anychip_port::{philox, DType, Distribution, Port};
use anychip_test_support::*;

const INV_2_24: f32 = 1.0 / 16_777_216.0;

#[test]
fn uniform_matches_the_philox_known_answer_block() {
    // Random123's kat vector: philox4x32_10(counter 0, key 0) = 6627e8d5 e169c58d bc57ac4c 9b00dbd8;
    // samples 0..4 of stream seed 0 are those words' top 24 bits times 2^-24.
    let words = [0x6627e8d5u32, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8];
    let want: Vec<f32> = words.iter().map(|w| (w >> 8) as f32 * INV_2_24).collect();
    let p = anychip_port_ref::new();
    let out = output(&p, DType::F32, &[4]);
    p.random(Distribution::Uniform, 0, 0, &out).unwrap();
    assert_same(&get(&p, &out), &want);
    // An offset picks up mid-block: samples 1, 2, 3.
    let out = output(&p, DType::F32, &[3]);
    p.random(Distribution::Uniform, 0, 1, &out).unwrap();
    assert_same(&get(&p, &out), &want[1..]);
}

#[test]
fn streams_follow_the_contract_functions_for_any_shape_and_offset() {
    let p = anychip_port_ref::new();
    for dist in [Distribution::Uniform, Distribution::Normal] {
        let out = output(&p, DType::F32, &[3, 7]);
        p.random(dist, 42, 1000, &out).unwrap();
        let want: Vec<f32> = (0..21)
            .map(|i| match dist {
                Distribution::Uniform => philox::uniform(42, 1000 + i),
                Distribution::Normal => philox::normal(42, 1000 + i),
            })
            .collect();
        assert_same(&get(&p, &out), &want);
        // bf16 output is the f32 sample rounded by the contract's rule.
        let b = output(&p, DType::BF16, &[21]);
        p.random(dist, 42, 1000, &b).unwrap();
        let wb: Vec<f32> = want.iter().map(|&v| anychip_port::bf16_to_f32(anychip_port::f32_to_bf16(v))).collect();
        assert_same(&get(&p, &b), &wb);
    }
}

#[test]
fn random_rejects_integer_outputs_and_counter_overflow() {
    let p = anychip_port_ref::new();
    assert_invalid(p.random(Distribution::Uniform, 0, 0, &output(&p, DType::I32, &[2])), "not a float dtype");
    assert_invalid(p.random(Distribution::Uniform, 0, u64::MAX, &output(&p, DType::F32, &[2])), "overflows");
}
