//! How many chips of one kind train a job within a deadline: the question a team asks before it
//! buys or reserves a pool ("how many H20s, or how many P800s, for 2T tokens in 30 days?").
//!
//! The global batch stays the job's: the one given, or about [`DEFAULT_BATCH_TOKENS`] a step as
//! `plan` picks it, never raised to give more chips something to do (a batch is a training
//! choice, not a throughput knob), so a deadline shorter than that batch allows is refused.
//!
//! Counts go in steps of a node (the chip's scale-up domain, at most 8 chips: the unit clusters
//! are rented and built in). The search doubles the count from one node until the best layout
//! finishes in time, then bisects between the last count that did not and the first that did.
//! Training time is not strictly monotone in the count (layouts must divide it, the batch is
//! rounded to it), so the answer is a count that meets the deadline while one node fewer does
//! not, not a proof that no smaller count anywhere does.

use crate::calib::Constants;
use crate::chips::Chip;
use crate::search::{search_at, Plan, Request, DEFAULT_BATCH_TOKENS, MAX_CHIPS};
use anyhow::{bail, Result};

/// The chips a node holds: the scale-up domain, at most 8 (a GB200 NVL72 rack is rented by the
/// tray, a TPU pod by the host), at least 1.
pub fn node_chips(chip: &Chip) -> usize {
    chip.get("scaleup_domain").map_or(8, |d| (d as usize).clamp(1, 8))
}

/// A deadline must be a positive, finite number of days.
pub fn check_days(days: f64) -> Result<()> {
    if !(days.is_finite() && days > 0.0) {
        bail!("--days must be a positive number of days, got {days}");
    }
    Ok(())
}

/// The fewest chips (in whole nodes) whose best layout trains `req` within `max_days`, with
/// that plan; `req.count` is ignored. An error says why no count does: the deadline is shorter
/// than the fastest count found takes (the global batch caps data parallelism), or the job fits
/// no count.
pub fn fewest_chips(req: &Request, chip: &Chip, k: &Constants, max_days: f64) -> Result<Plan> {
    check_days(max_days)?;
    let node = node_chips(chip);
    let at = |count: usize| search_at(&Request { count, pinned: None, ..req.clone() }, chip, k, false);
    // Doubling: `fails` is the largest count known to miss the deadline (0: none tried).
    let (mut fails, mut fastest): (usize, Option<(usize, f64)>) = (0, None);
    let mut count = node;
    let (mut meets, mut stalled) = (None, 0);
    // The first and last refusals: where every count is refused alike (a chip figure missing),
    // that refusal is the answer.
    let (mut first_refusal, mut last_refusal): (Option<String>, Option<String>) = (None, None);
    while count <= MAX_CHIPS {
        match at(count) {
            Ok(plan) if plan.best().days <= max_days => {
                meets = Some((count, plan));
                break;
            }
            Ok(plan) => {
                let days = plan.best().days;
                // Less than 5% faster than the fastest so far: the batch is spread about as far
                // as it goes.
                stalled = if fastest.is_some_and(|(_, d)| days > 0.95 * d) { stalled + 1 } else { 0 };
                if fastest.is_none_or(|(_, d)| days < d) {
                    fastest = Some((count, days));
                }
            }
            Err(e) => {
                let e = format!("{e:#}");
                first_refusal.get_or_insert_with(|| e.clone());
                last_refusal = Some(e);
                // Refused after a count that planned: too many chips for the batch.
                stalled += usize::from(fastest.is_some());
            }
        }
        if stalled >= 3 {
            break;
        }
        fails = count;
        count *= 2;
    }
    let Some((mut meets_at, mut plan)) = meets else {
        return Err(match fastest {
            Some((n, d)) => anyhow::anyhow!(
                "no count trains {} on {} within {max_days} days: the fastest found, {n} chips, takes {d:.1} days (more chips than the global batch, {} sequences, can spread over gain nothing; a larger --global-batch or fewer tokens may)",
                req.model.name,
                chip.name,
                req.global_batch.map_or_else(|| format!("about {}", (DEFAULT_BATCH_TOKENS / req.seq).max(1)), |b| b.to_string())
            ),
            None => match (first_refusal, last_refusal) {
                (Some(a), Some(b)) if a == b => anyhow::anyhow!(a),
                (_, last) => anyhow::anyhow!(
                    "no count of {} up to {MAX_CHIPS} chips plans {}{}",
                    chip.name,
                    req.model.name,
                    last.map(|e| format!(": at {} chips, {e}", fails)).unwrap_or_default()
                ),
            },
        });
    };
    // Bisection over whole nodes between a count that misses and one that meets.
    while meets_at - fails > node {
        let mid = (fails + meets_at) / 2 / node * node;
        let mid = if mid <= fails { fails + node } else { mid };
        match at(mid) {
            Ok(p) if p.best().days <= max_days => {
                meets_at = mid;
                plan = p;
            }
            _ => fails = mid,
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chips::ChipDb;
    use crate::perf::Precision;
    use crate::search::search_with;

    fn job(model: &str, tokens: f64) -> Request {
        Request {
            model: crate::model::resolve(model).unwrap(),
            count: 1,
            tokens,
            seq: 4096,
            global_batch: None,
            precision: Precision::Bf16,
            stack: crate::stack::find("nemo-2025").unwrap(),
            pinned: None,
        }
    }

    #[test]
    fn the_count_meets_the_deadline_and_one_node_fewer_does_not() {
        let db = ChipDb::builtin();
        let k = crate::calib::shipped();
        for (chip, days) in [("h100", 30.0), ("h20", 30.0), ("b200", 7.0)] {
            let chip = db.find(chip).unwrap();
            let req = job("llama3-70b", 1e12);
            let plan = fewest_chips(&req, chip, &k, days).unwrap();
            let node = node_chips(chip);
            assert_eq!(plan.count % node, 0, "{}: {} chips is not whole nodes", chip.name, plan.count);
            assert!(plan.best().days <= days, "{}: {} days", chip.name, plan.best().days);
            let fewer = search_at(&Request { count: plan.count - node, ..req.clone() }, chip, &k, false);
            assert!(fewer.is_err() || fewer.unwrap().best().days > days, "{}: one node fewer meets it", chip.name);
            // The plan is `plan`'s at that count.
            let same = search_with(&Request { count: plan.count, ..req }, chip, &k).unwrap();
            assert_eq!(same.best().estimate.tokens_per_s, plan.best().estimate.tokens_per_s);
        }
    }

    #[test]
    fn a_faster_chip_needs_fewer_and_a_tighter_deadline_more() {
        let (db, k) = (ChipDb::builtin(), crate::calib::shipped());
        let req = job("llama3-8b", 1e12);
        let n = |chip: &str, days: f64| fewest_chips(&req, db.find(chip).unwrap(), &k, days).unwrap().count;
        assert!(n("b200", 20.0) < n("h100", 20.0) && n("h100", 20.0) < n("h20", 20.0));
        assert!(n("h100", 5.0) > n("h100", 20.0));
    }

    #[test]
    fn an_impossible_deadline_or_chip_says_why() {
        let (db, k) = (ChipDb::builtin(), crate::calib::shipped());
        let req = job("llama3-405b", 15e12);
        let e = fewest_chips(&req, db.find("h100").unwrap(), &k, 3.0).unwrap_err().to_string();
        assert!(e.contains("within 3 days") && e.contains("the fastest found") && e.contains("--global-batch"), "{e}");
        // A chip missing a figure is refused at every count alike: that refusal, not a count.
        let e = fewest_chips(&req, db.find("p800").unwrap(), &k, 30.0).unwrap_err().to_string();
        assert!(e.contains("mem_bw_tbs is unknown") && e.contains("--override"), "{e}");
        assert!(fewest_chips(&req, db.find("h100").unwrap(), &k, 0.0).is_err());
    }
}
