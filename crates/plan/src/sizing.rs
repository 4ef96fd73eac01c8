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
use anyhow::{anyhow, bail, Result};

/// The chips a node holds: the scale-up domain, at most 8 (a GB200 NVL72 rack is rented by the
/// tray, a TPU pod by the host), at least 1.
pub fn node_chips(chip: &Chip) -> usize {
    chip.get("scaleup_domain").map_or(8, |d| (d as usize).clamp(1, 8))
}

/// A deadline must be a positive, finite number of days; `what` is how the user spelled it
/// (`--days`, `days`, a jobs file's `deadline_days`).
pub fn check_days(days: f64, what: &str) -> Result<()> {
    if !(days.is_finite() && days > 0.0) {
        bail!("{what} must be a positive number of days, got {days}");
    }
    Ok(())
}

/// The fewest chips (in whole nodes) whose best layout trains `req` within `max_days`, with
/// that plan; `req.count` is ignored. An error says why no count does: the deadline is shorter
/// than the fastest count found takes (the global batch caps data parallelism), or the job fits
/// no count.
pub fn fewest_chips(req: &Request, chip: &Chip, k: &Constants, max_days: f64) -> Result<Plan> {
    check_days(max_days, "the deadline")?;
    let node = node_chips(chip);
    let at = |count: usize| search_at(&Request { count, pinned: None, ..req.clone() }, chip, k, false);
    match doubling(&at, node, max_days) {
        Doubling::Met { misses, meets, plan } => Ok(bisect(&at, node, max_days, misses, meets, *plan)),
        Doubling::TooSlow { count, days } => bail!(
            "no count trains {} on {} within {max_days} days: the fastest found, {count} chips, takes {days:.1} days (more chips than the global batch, {} sequences, can spread over gain nothing; a larger --global-batch or fewer tokens may)",
            req.model.name,
            chip.name,
            req.global_batch.map_or_else(|| format!("about {}", (DEFAULT_BATCH_TOKENS / req.seq).max(1)), |b| b.to_string())
        ),
        // Every count refused alike (a chip figure missing): that refusal is the answer.
        Doubling::Refused { first, last, .. } if first == last => Err(anyhow!(last)),
        Doubling::Refused { last, count, .. } => {
            bail!("no count of {} up to {MAX_CHIPS} chips plans {}: at {count} chips, {last}", chip.name, req.model.name)
        }
    }
}

/// How doubling from one node ended.
enum Doubling {
    /// `meets` chips finish in time with `plan`; `misses` (0: none tried) is the count before.
    Met { misses: usize, meets: usize, plan: Box<Plan> },
    /// Counts planned, none in time: the fastest, `count` chips taking `days`.
    TooSlow { count: usize, days: f64 },
    /// No count planned: the first and last refusals, the last at `count` chips.
    Refused { first: String, last: String, count: usize },
}

/// Double the count from one node until a plan finishes within `max_days`, the count passes
/// [`MAX_CHIPS`], or three doublings in a row gain under 5% (or are refused) after one planned:
/// the batch is spread about as far as it goes.
fn doubling(at: &dyn Fn(usize) -> Result<Plan>, node: usize, max_days: f64) -> Doubling {
    let (mut misses, mut count, mut stalled) = (0, node, 0);
    let mut fastest: Option<(usize, f64)> = None;
    let mut refusals: Option<(String, String)> = None;
    while count <= MAX_CHIPS && stalled < 3 {
        match at(count) {
            Ok(plan) if plan.best().days <= max_days => {
                return Doubling::Met { misses, meets: count, plan: Box::new(plan) }
            }
            Ok(plan) => {
                let days = plan.best().days;
                stalled = if fastest.is_some_and(|(_, d)| days > 0.95 * d) { stalled + 1 } else { 0 };
                if fastest.is_none_or(|(_, d)| days < d) {
                    fastest = Some((count, days));
                }
            }
            Err(e) => {
                let e = format!("{e:#}");
                refusals = Some(match refusals {
                    Some((first, _)) => (first, e),
                    None => (e.clone(), e),
                });
                stalled += usize::from(fastest.is_some());
            }
        }
        misses = count;
        count *= 2;
    }
    match (fastest, refusals) {
        (Some((count, days)), _) => Doubling::TooSlow { count, days },
        (None, Some((first, last))) => Doubling::Refused { first, last, count: misses },
        (None, None) => Doubling::Refused { first: String::new(), last: "no count was tried".into(), count: 0 },
    }
}

/// Bisect over whole nodes between `misses` chips (late, or 0) and `meets` (in time, with
/// `plan`): the count found meets the deadline and one node fewer does not.
fn bisect(
    at: &dyn Fn(usize) -> Result<Plan>,
    node: usize,
    max_days: f64,
    mut misses: usize,
    mut meets: usize,
    mut plan: Plan,
) -> Plan {
    while meets - misses > node {
        let mid = ((misses + meets) / 2 / node * node).max(misses + node);
        match at(mid) {
            Ok(p) if p.best().days <= max_days => (meets, plan) = (mid, p),
            _ => misses = mid,
        }
    }
    plan
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
