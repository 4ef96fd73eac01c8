//! The performance model against published training runs: the gate of issue 5.

use anychip_plan::validation::{memory_rows, predict_memory, rows, run_rows};

#[test]
fn throughput_matches_published_runs() {
    let out = run_rows().unwrap();
    assert_eq!(out.len(), rows().len());
    println!("{:<28} {:>10} {:>10} {:>8}", "row", "published", "predicted", "error");
    for o in &out {
        println!("{:<28} {:>10.1} {:>10.1} {:>+7.1}%", o.id, o.published, o.predicted, 100.0 * o.error());
    }
    let mae = out.iter().map(|o| o.error().abs()).sum::<f64>() / out.len() as f64;
    let worst = out.iter().max_by(|a, b| a.error().abs().total_cmp(&b.error().abs())).unwrap();
    println!(
        "mean absolute error {:.1}% over {} rows; worst {} {:+.1}%",
        100.0 * mae,
        out.len(),
        worst.id,
        100.0 * worst.error()
    );
    assert!(mae <= 0.10, "mean absolute error {:.1}% > 10%", 100.0 * mae);
    assert!(worst.error().abs() <= 0.25, "row {} is off by {:+.1}% (> 25%)", worst.id, 100.0 * worst.error());
}

#[test]
fn memory_matches_korthikanti_figure_1() {
    println!("{:<18} {:>18} {:>18} {:>18}", "row", "states GiB", "act TP GiB", "act SP+sel GiB");
    let mut worst: f64 = 0.0;
    for r in memory_rows() {
        let (s, a, b) = predict_memory(&r).unwrap();
        let pairs = [(s, r.states_gib), (a, r.act_full_gib), (b, r.act_sp_selective_gib)];
        let cells: Vec<String> = pairs.iter().map(|(p, w)| format!("{p:.2}/{w:.2}")).collect();
        println!("{:<18} {:>18} {:>18} {:>18}", r.id, cells[0], cells[1], cells[2]);
        for (p, w) in pairs {
            worst = worst.max((p / w - 1.0).abs());
        }
    }
    println!("worst memory error {:.1}%", 100.0 * worst);
    assert!(worst <= 0.15, "memory off by {:.1}% (> 15%)", 100.0 * worst);
}
