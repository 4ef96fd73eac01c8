//! Batches of random training windows, resumable and shardable across ranks, and the fixed
//! windows used for validation loss.
//!
//! Window starts come from a counter-based generator (Philox4x32-10, as in [`anychip_port::philox`]):
//! row `g` of global step `s` starts at `floor(x * (n - ctx) / 2^64)` where
//! `x = philox([lo(s), hi(s), g, DATA], key = seed)`. A batch therefore depends only on
//! (seed, step, global batch, ctx, tokens): no hidden generator state to save, any step can be
//! recomputed, and a rank computes only its own rows.

use std::sync::Arc;

use anychip_port::philox::philox4x32_10;
use anyhow::bail;
use serde::{Deserialize, Serialize};

/// Distinguishes the data stream from the ports' uniform (0) and normal (1) streams, which
/// use the same counter layout, so one `--seed` can drive both without correlation.
const DATA_STREAM: u32 = 0x4441_5441; // "DATA"

/// Inputs and next-token targets for `batch` rows of `ctx` tokens, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Token ids, `batch * ctx`.
    pub inputs: Vec<i32>,
    /// `inputs` shifted left by one token: `targets[r][t] = tokens[start_r + t + 1]`.
    pub targets: Vec<i32>,
    /// Rows.
    pub batch: usize,
    /// Tokens per row.
    pub ctx: usize,
}

/// Everything that determines a loader's next batch (besides the token stream), for checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LoaderState {
    /// Seed of the window stream.
    pub seed: u64,
    /// Number of batches already drawn.
    pub step: u64,
    /// This rank's index in `0..world`.
    pub rank: usize,
    /// Number of ranks sharing each global batch.
    pub world: usize,
    /// Rows per rank.
    pub batch: usize,
    /// Tokens per row.
    pub ctx: usize,
    /// Length of the token stream, to catch resuming on different data.
    pub n_tokens: u64,
}

/// Draws random `ctx`-token windows from a token stream.
#[derive(Clone, Debug)]
pub struct Loader {
    tokens: Arc<[u32]>,
    batch: usize,
    ctx: usize,
    seed: u64,
    step: u64,
    rank: usize,
    world: usize,
}

impl Loader {
    /// A loader for rank `rank` of `world`, each drawing `batch` rows of `ctx` tokens per step.
    /// `tokens` may be a `Vec<u32>`, a `&[u32]` (copied once) or an `Arc<[u32]>` (shared).
    pub fn new(
        tokens: impl Into<Arc<[u32]>>,
        batch: usize,
        ctx: usize,
        seed: u64,
        rank: usize,
        world: usize,
    ) -> anyhow::Result<Loader> {
        let tokens = tokens.into();
        if batch == 0 || ctx == 0 {
            bail!("batch {batch} and ctx {ctx} must both be at least 1; pass a positive --batch and --ctx");
        }
        if world == 0 || rank >= world {
            bail!("rank {rank} is not in 0..{world}; each of the world's ranks needs an index below the world size");
        }
        if batch.checked_mul(world).is_none_or(|g| g > u32::MAX as usize) {
            bail!("a global batch of {batch} x {world} rows is too large; use a smaller --batch");
        }
        check_len(tokens.len(), ctx, "corpus", "more data")?;
        Ok(Loader { tokens, batch, ctx, seed, step: 0, rank, world })
    }

    /// A loader positioned exactly where `state` was taken.
    pub fn from_state(tokens: impl Into<Arc<[u32]>>, state: &LoaderState) -> anyhow::Result<Loader> {
        let mut loader = Loader::new(tokens, state.batch, state.ctx, state.seed, state.rank, state.world)?;
        loader.restore(state)?;
        Ok(loader)
    }

    /// The state that determines the next batch.
    pub fn state(&self) -> LoaderState {
        LoaderState {
            seed: self.seed,
            step: self.step,
            rank: self.rank,
            world: self.world,
            batch: self.batch,
            ctx: self.ctx,
            n_tokens: self.tokens.len() as u64,
        }
    }

    /// Continues from `state`: the next batch is the one that would have followed it. The rank
    /// layout may differ (e.g. resuming 2 ranks' run on 1) as long as the global batch is the same.
    pub fn restore(&mut self, state: &LoaderState) -> anyhow::Result<()> {
        if state.n_tokens != self.tokens.len() as u64 {
            bail!(
                "the saved data position is for {} tokens but this corpus has {}; resume with the same --data and --tokenizer",
                state.n_tokens,
                self.tokens.len()
            );
        }
        if state.ctx != self.ctx {
            bail!(
                "the saved data position uses ctx {} but this run uses {}; resume with --ctx {}",
                state.ctx,
                self.ctx,
                state.ctx
            );
        }
        let (saved, here) = (state.batch * state.world, self.batch * self.world);
        if saved != here {
            bail!(
                "the saved data position uses a global batch of {saved} rows but this run has {here}; resume with the same --batch"
            );
        }
        self.seed = state.seed;
        self.step = state.step;
        Ok(())
    }

    /// The batch of the current step; advances the step.
    pub fn next_batch(&mut self) -> Batch {
        let b = self.batch_at(self.step);
        self.step += 1;
        b
    }

    /// The batch this rank draws at `step`, without moving.
    pub fn batch_at(&self, step: u64) -> Batch {
        let starts = (0..self.batch).map(|i| self.window_start(step, i * self.world + self.rank));
        windows(&self.tokens, starts, self.batch, self.ctx)
    }

    /// Start of row `global_row` of the global batch at `step` (rank r owns rows r, r+world, ...).
    pub fn window_start(&self, step: u64, global_row: usize) -> usize {
        let w = philox4x32_10(
            [step as u32, (step >> 32) as u32, global_row as u32, DATA_STREAM],
            [self.seed as u32, (self.seed >> 32) as u32],
        );
        let x = ((w[0] as u64) << 32) | w[1] as u64;
        // Lemire's multiply-shift maps 64 random bits onto 0..choices with bias < choices / 2^64.
        let choices = (self.tokens.len() - self.ctx) as u64;
        ((x as u128 * choices as u128) >> 64) as usize
    }

    /// Batches drawn so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Rows per batch on this rank.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Tokens per row.
    pub fn ctx(&self) -> usize {
        self.ctx
    }
}

/// Non-overlapping windows `tokens[k*ctx .. k*ctx + ctx + 1]` in order, `batch` rows at a time
/// (the last batch may have fewer rows), at most `max_batches` batches: the same validation
/// tokens every time, so losses are comparable across steps and runs.
pub fn eval_batches(tokens: &[u32], batch: usize, ctx: usize, max_batches: usize) -> anyhow::Result<EvalBatches<'_>> {
    if batch == 0 || ctx == 0 {
        bail!("batch {batch} and ctx {ctx} must both be at least 1; pass a positive --batch and --ctx");
    }
    check_len(tokens.len(), ctx, "validation split", "more data (the validation split is a fixed share of it)")?;
    let n_windows = (tokens.len() - 1) / ctx;
    let windows = n_windows.min(max_batches.saturating_mul(batch));
    Ok(EvalBatches { tokens, batch, ctx, next: 0, end: windows })
}

/// Iterator returned by [`eval_batches`].
#[derive(Clone, Debug)]
pub struct EvalBatches<'a> {
    tokens: &'a [u32],
    batch: usize,
    ctx: usize,
    next: usize,
    end: usize,
}

impl Iterator for EvalBatches<'_> {
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.end {
            return None;
        }
        let rows = self.batch.min(self.end - self.next);
        let starts = (self.next..self.next + rows).map(|k| k * self.ctx);
        self.next += rows;
        Some(windows(self.tokens, starts, rows, self.ctx))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.end - self.next).div_ceil(self.batch);
        (n, Some(n))
    }
}

impl ExactSizeIterator for EvalBatches<'_> {}

fn check_len(n: usize, ctx: usize, what: &str, fix: &str) -> anyhow::Result<()> {
    if n < ctx + 1 {
        bail!("{what} has {n} tokens, fewer than --ctx+1 = {}; use a smaller --ctx or {fix}", ctx + 1);
    }
    Ok(())
}

fn windows(tokens: &[u32], starts: impl Iterator<Item = usize>, batch: usize, ctx: usize) -> Batch {
    let mut inputs = Vec::with_capacity(batch * ctx);
    let mut targets = Vec::with_capacity(batch * ctx);
    for s in starts {
        inputs.extend(tokens[s..s + ctx].iter().map(|&t| t as i32));
        targets.extend(tokens[s + 1..s + ctx + 1].iter().map(|&t| t as i32));
    }
    Batch { inputs, targets, batch, ctx }
}
