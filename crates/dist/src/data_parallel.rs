//! Data parallelism over [`Collectives`]: gradients averaged in buckets, and ZeRO-1 (AdamW state
//! sharded across ranks).
//!
//! The parameters are laid end to end in one flat index space of `total` elements, cut into
//! buckets whose lengths are multiples of `world` (the last one padded with zeros). Rank r owns
//! block r of every bucket: `[start + r*L/world, start + (r+1)*L/world)`.
//!
//! Replicated (`zero = false`), per bucket:  g_flat -> reduce-scatter -> /world -> all-gather,
//! then every rank runs the same AdamW on the same averaged gradients.
//! ZeRO-1, per bucket:  g_flat -> reduce-scatter -> /world  (rank r keeps block r), then
//!   |g| = sqrt(all-reduce(sum over own blocks of g^2)), AdamW on the owned elements only,
//!   then each rank's updated block -> all-gather -> every rank's parameters.
//! Both paths sum each element once (on its owner), so every rank holds the same bits.
//!
//! Overlap: `*_during` run forward and backward on the calling thread and hand each gradient
//! over the moment backward finishes it; a communication thread exchanges each bucket as soon
//! as all its gradients are in, while backward goes on. Buckets go in a fixed order (last
//! parameters first, the order backward produces them), the same on every rank, as MPI needs.

use anychip_core::{adamw_step, grad_norm, no_grad, AdamWParams, Tensor};
use anychip_optim::AdamWConfig;
use anychip_port::{BinaryOp, Collectives, DType, Layout, Port, View};
use std::ops::Range;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Result<T> = anychip_core::Result<T>;

/// How to run data parallelism.
#[derive(Clone, Copy, Debug)]
pub struct DpOptions {
    /// Shard the AdamW moments across ranks (ZeRO stage 1).
    pub zero: bool,
    /// Target size of one gradient bucket in bytes (f32 elements x 4).
    pub bucket_bytes: usize,
    /// Exchange buckets on a communication thread during backward, when the collectives allow
    /// calls from another thread ([`Collectives::any_thread`]); otherwise after backward.
    pub overlap: bool,
}

impl Default for DpOptions {
    fn default() -> Self {
        // 1 MiB, not PyTorch DDP's 25: through host memory and Open MPI's shared-memory
        // transport, exchanges beyond the 2 MiB L2 fell off a cliff here (a 498 MB gradient:
        // 0.6 s in 1 MiB buckets, 3.1 s in 25 MiB ones; crates/dist/examples/allreduce.rs),
        // and per-bucket latency (~0.1 ms) stays small next to a step.
        DpOptions { zero: false, bucket_bytes: 1 << 20, overlap: true }
    }
}

/// Time and traffic of the gradient (and, under ZeRO-1, weight) exchange so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct CommStats {
    /// Exchanges (one per optimizer step).
    pub exchanges: u64,
    /// Wall seconds spent packing, in collectives and unpacking.
    pub seconds: f64,
    /// Wall seconds the training thread waited for the exchange after backward: `seconds`
    /// less what overlap hid behind the backward pass.
    pub exposed_seconds: f64,
    /// Bytes each rank sent over the wire: `2 (N-1)/N x 4 x params` per exchange, as a ring
    /// all-reduce (the "bus bytes" of nccl-tests).
    pub bus_bytes: f64,
}

impl CommStats {
    /// Bus bandwidth in GB/s: bus bytes over the time spent (0 before any exchange).
    pub fn bus_gbs(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bus_bytes / self.seconds / 1e9
        } else {
            0.0
        }
    }
}

/// A contiguous run of elements shared by one parameter and one flat range.
#[derive(Clone, Copy, Debug)]
struct Piece {
    /// Parameter index.
    param: usize,
    /// Offset inside the parameter.
    at: usize,
    /// Offset inside the flat range the piece was cut from.
    pos: usize,
    len: usize,
}

/// One owned piece under ZeRO-1, with its AdamW moments.
struct Owned {
    bucket: usize,
    piece: Piece,
    m: Tensor,
    v: Tensor,
}

struct Zero {
    /// Per bucket: this rank's block of the averaged gradient (later reused to send weights).
    blocks: Vec<Tensor>,
    owned: Vec<Owned>,
    step: u64,
}

/// The data-parallel side of a training step for one model replica.
pub struct DataParallel {
    coll: Arc<dyn Collectives>,
    port: Arc<dyn Port>,
    params: Vec<Tensor>,
    decay: Vec<bool>,
    offsets: Vec<usize>,
    total: usize,
    buckets: Vec<Range<usize>>,
    /// Staging for one whole bucket.
    flat: Tensor,
    /// Staging for one rank's block of a bucket (replicated mode).
    block: Tensor,
    /// `[1]` holding 1/world, broadcast by stride 0 to scale a sum into a mean.
    inv_world: Tensor,
    zero: Option<Zero>,
    adamw: AdamWConfig,
    stats: Mutex<CommStats>,
    /// Per parameter: the buckets it has elements in.
    param_buckets: Vec<Vec<usize>>,
    overlap: bool,
}

/// What the training thread hands the communication thread.
enum Handed {
    /// Parameter index and its (final, contiguous) gradient.
    Grad(usize, Tensor),
    /// Backward is over: parameters without a gradient get zeros.
    Done,
}

impl DataParallel {
    /// Data parallelism for `params` (with their weight-decay flags), which must be contiguous
    /// and live on the port the collectives move. Every rank passes the same parameter list.
    pub fn new(
        coll: Arc<dyn Collectives>,
        params: &[(Tensor, bool)],
        adamw: AdamWConfig,
        opts: DpOptions,
    ) -> Result<DataParallel> {
        let world = coll.world();
        let first = params.first().ok_or_else(|| err("data parallelism over a model with no parameters"))?;
        let port = first.0.port().clone();
        let mut offsets = Vec::with_capacity(params.len());
        let mut total = 0;
        for (p, _) in params {
            if !p.layout().is_contiguous() {
                return Err(err(format!("parameter of shape {:?} is not contiguous", p.shape())));
            }
            offsets.push(total);
            total += p.numel();
        }
        let per_bucket = (opts.bucket_bytes / 4).max(1).div_ceil(world) * world;
        let buckets: Vec<Range<usize>> = (0..total)
            .step_by(per_bucket)
            .map(|s| s..s + (total - s).min(per_bucket).div_ceil(world) * world)
            .collect();
        let longest = buckets.iter().map(|b| b.len()).max().unwrap_or(world);
        let flat = Tensor::empty(&port, &[longest], DType::F32)?;
        let block = Tensor::empty(&port, &[if opts.zero { 1 } else { longest / world }], DType::F32)?;
        let inv_world = Tensor::full(&port, &[1], 1.0 / world as f64, DType::F32)?;
        let param_buckets = offsets
            .iter()
            .zip(params)
            .map(|(&o, (p, _))| {
                let r = o..o + p.numel();
                buckets.iter().enumerate().filter(|(_, b)| b.start < r.end && r.start < b.end).map(|(k, _)| k).collect()
            })
            .collect();
        let overlap = opts.overlap && coll.any_thread();
        let mut dp = DataParallel {
            coll,
            port,
            params: params.iter().map(|(p, _)| p.detach()).collect(),
            decay: params.iter().map(|(_, d)| *d).collect(),
            offsets,
            total,
            buckets,
            flat,
            block,
            inv_world,
            zero: None,
            adamw,
            stats: Mutex::new(CommStats::default()),
            param_buckets,
            overlap,
        };
        if opts.zero {
            dp.zero = Some(dp.shard()?);
        }
        Ok(dp)
    }

    fn shard(&self) -> Result<Zero> {
        let (rank, world) = (self.coll.rank(), self.coll.world());
        let mut blocks = Vec::new();
        let mut owned = Vec::new();
        for (k, b) in self.buckets.iter().enumerate() {
            let n = b.len() / world;
            blocks.push(Tensor::zeros(&self.port, &[n], DType::F32)?);
            let mine = b.start + rank * n..b.start + (rank + 1) * n;
            for piece in self.pieces(mine) {
                let m = Tensor::zeros(&self.port, &[piece.len], DType::F32)?;
                let v = Tensor::zeros(&self.port, &[piece.len], DType::F32)?;
                owned.push(Owned { bucket: k, piece, m, v });
            }
        }
        Ok(Zero { blocks, owned, step: 0 })
    }

    /// This rank's index.
    pub fn rank(&self) -> usize {
        self.coll.rank()
    }

    /// Number of ranks.
    pub fn world(&self) -> usize {
        self.coll.world()
    }

    /// Whether the AdamW state is sharded (ZeRO-1); then [`DataParallel::zero_step`] updates.
    pub fn is_zero(&self) -> bool {
        self.zero.is_some()
    }

    /// Bytes of AdamW moments this rank holds: `8 * params` replicated, about `8 * params /
    /// world` under ZeRO-1.
    pub fn optimizer_state_bytes(&self) -> usize {
        match &self.zero {
            Some(z) => z.owned.iter().map(|o| o.piece.len * 8).sum(),
            None => self.total * 8,
        }
    }

    /// Time and traffic of the exchanges so far.
    pub fn comm_stats(&self) -> CommStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// Whether gradients are exchanged during backward (see [`DpOptions::overlap`]).
    pub fn overlaps(&self) -> bool {
        self.overlap
    }

    /// Account one exchange of every bucket: `busy` in exchanges, `exposed` of it not hidden.
    fn count_exchange(&self, busy: Duration, exposed: Duration) {
        let n = self.world() as f64;
        let padded: usize = self.buckets.iter().map(|b| b.len()).sum();
        if let Ok(mut s) = self.stats.lock() {
            s.exchanges += 1;
            s.seconds += busy.as_secs_f64();
            s.exposed_seconds += exposed.as_secs_f64();
            s.bus_bytes += 2.0 * (n - 1.0) / n * 4.0 * padded as f64;
        }
    }

    /// Number of gradient buckets.
    pub fn n_buckets(&self) -> usize {
        self.buckets.len()
    }

    /// The pieces of parameters covering flat `range`, in order.
    fn pieces(&self, range: Range<usize>) -> Vec<Piece> {
        let mut out = Vec::new();
        for (i, p) in self.params.iter().enumerate() {
            let (s, e) = (self.offsets[i], self.offsets[i] + p.numel());
            let (a, b) = (s.max(range.start), e.min(range.end));
            if a < b {
                out.push(Piece { param: i, at: a - s, pos: a - range.start, len: b - a });
            }
        }
        out
    }

    /// `dst[dst_at .. dst_at + len]` (flat, elements) = `src[src_at ..]`, converting dtype.
    fn move_elems(&self, src: &Tensor, src_at: usize, dst: &Tensor, dst_at: usize, len: usize) -> Result<()> {
        let (sv, dv) = (flat_view(src, src_at, len), flat_view(dst, dst_at, len));
        if src.dtype() == dst.dtype() {
            self.port.copy_strided(&sv, &dv)?;
        } else {
            self.port.cast(&sv, &dv)?;
        }
        Ok(())
    }

    /// Gather `srcs` (aligned with the parameters) over `range` into `flat[0..range.len()]`,
    /// zero past the last parameter.
    fn pack(&self, srcs: &[Option<&Tensor>], range: Range<usize>, flat: &Tensor) -> Result<()> {
        for pc in self.pieces(range.clone()) {
            let src = srcs[pc.param].ok_or_else(|| err(format!("no gradient for parameter {} to pack", pc.param)))?;
            self.move_elems(src, pc.at, flat, pc.pos, pc.len)?;
        }
        let real = self.total.min(range.end).saturating_sub(range.start);
        if real < range.len() {
            self.port.fill(&flat_view(flat, real, range.len() - real), 0.0)?;
        }
        Ok(())
    }

    /// Scatter `flat[0..range.len()]` back into `dsts` over `range`.
    fn unpack(&self, flat: &Tensor, range: Range<usize>, dsts: &[Tensor]) -> Result<()> {
        for pc in self.pieces(range) {
            self.move_elems(flat, pc.pos, &dsts[pc.param], pc.at, pc.len)?;
        }
        Ok(())
    }

    /// `t[..n] *= 1/world`, in place.
    fn to_mean(&self, t: &Tensor, n: usize) -> Result<()> {
        let v = flat_view(t, 0, n);
        let inv = View {
            buf: self.inv_world.buffer().clone(),
            dtype: DType::F32,
            layout: Layout { shape: vec![n], strides: vec![0], offset: self.inv_world.layout().offset },
        };
        self.port.binary(BinaryOp::Mul, &v, &inv, &v)?;
        Ok(())
    }

    /// Make every rank's parameters equal to rank 0's (after initialisation or loading).
    pub fn broadcast_params(&self) -> Result<()> {
        let _g = no_grad();
        let params: Vec<Option<&Tensor>> = self.params.iter().map(Some).collect();
        for b in &self.buckets {
            self.pack(&params, b.clone(), &self.flat)?;
            self.coll.broadcast(&flat_view(&self.flat, 0, b.len()), 0)?;
            self.unpack(&self.flat, b.clone(), &self.params)?;
        }
        Ok(())
    }

    /// The mean over ranks of each rank's `grads` (aligned with the parameters), as new
    /// tensors, identical on every rank. For the replicated optimizer.
    pub fn average_grads(&self, grads: &[Tensor]) -> Result<Vec<Tensor>> {
        let _g = no_grad();
        self.check_grads(grads)?;
        let out: Vec<Tensor> = self.params.iter().map(|p| p.empty_like()).collect::<Result<_>>()?;
        let grads: Vec<Tensor> = grads.iter().map(|g| g.contiguous()).collect::<Result<_>>()?;
        let srcs: Vec<Option<&Tensor>> = grads.iter().map(Some).collect();
        let t0 = Instant::now();
        for k in 0..self.buckets.len() {
            self.exchange_bucket(k, &srcs, Some(&out))?;
        }
        // Nothing overlaps here: all of the exchange is waited for.
        let took = t0.elapsed();
        self.count_exchange(took, took);
        Ok(out)
    }

    /// [`DataParallel::average_grads`] overlapped with backward: `work` runs forward and
    /// backward on this thread and hands each parameter's final gradient to the callback it is
    /// given (`(parameter index, gradient)`, any order, each at most once; missing ones count
    /// as zero). Returns what `work` returned and the averaged gradients.
    pub fn average_grads_during<R, E: From<anychip_core::Error>>(
        &self,
        work: impl FnOnce(&mut dyn FnMut(usize, Tensor) -> Result<()>) -> std::result::Result<R, E>,
    ) -> std::result::Result<(R, Vec<Tensor>), E> {
        if self.zero.is_some() {
            return Err(err("average_grads_during on a ZeRO-1 optimizer; use zero_step_during").into());
        }
        let out: Vec<Tensor> = self.params.iter().map(|p| p.empty_like()).collect::<Result<_>>()?;
        let (r, busy, exposed) = self.exchange_during(Some(&out), work)?;
        self.count_exchange(busy, exposed);
        Ok((r, out))
    }

    /// [`DataParallel::zero_step`] with the gradient reduce-scatter overlapped with backward;
    /// `work` as in [`DataParallel::average_grads_during`].
    pub fn zero_step_during<R, E: From<anychip_core::Error>>(
        &mut self,
        lr: f32,
        work: impl FnOnce(&mut dyn FnMut(usize, Tensor) -> Result<()>) -> std::result::Result<R, E>,
    ) -> std::result::Result<(R, Tensor), E> {
        self.zero_step_during_with(lr, work, |_| Ok(None))
    }

    /// [`DataParallel::zero_step_during`] whose clipping norm also counts `extra_sq(&r)`: the
    /// squared norm (`[1]`, equal on every rank) of gradients this exchange does not hold
    /// (expert parallelism's experts), found after `work` and the gradient exchange.
    pub fn zero_step_during_with<R, E: From<anychip_core::Error>>(
        &mut self,
        lr: f32,
        work: impl FnOnce(&mut dyn FnMut(usize, Tensor) -> Result<()>) -> std::result::Result<R, E>,
        extra_sq: impl FnOnce(&R) -> std::result::Result<Option<Tensor>, E>,
    ) -> std::result::Result<(R, Tensor), E> {
        if self.zero.is_none() {
            return Err(err("zero_step_during on a replicated optimizer; use average_grads_during").into());
        }
        let (r, busy, exposed) = self.exchange_during(None, work)?;
        let extra = extra_sq(&r)?;
        let norm = self.zero_update(lr, busy, exposed, extra.as_ref())?;
        Ok((r, norm))
    }

    /// Average bucket `k` of the gradients `srcs`: into `out` (replicated), or into this
    /// rank's block of the bucket (ZeRO-1, `out` = None).
    fn exchange_bucket(&self, k: usize, srcs: &[Option<&Tensor>], out: Option<&[Tensor]>) -> Result<()> {
        let b = self.buckets[k].clone();
        let (l, n) = (b.len(), b.len() / self.world());
        self.pack(srcs, b.clone(), &self.flat)?;
        match (&self.zero, out) {
            (Some(z), None) => {
                self.coll.reduce_scatter(&flat_view(&self.flat, 0, l), &z.blocks[k].view())?;
                self.to_mean(&z.blocks[k], n)
            }
            (None, Some(out)) => {
                self.coll.reduce_scatter(&flat_view(&self.flat, 0, l), &flat_view(&self.block, 0, n))?;
                self.to_mean(&self.block, n)?;
                self.coll.all_gather(&flat_view(&self.block, 0, n), &flat_view(&self.flat, 0, l))?;
                self.unpack(&self.flat, b, out)
            }
            _ => Err(err("exchange_bucket: output does not match the optimizer mode")),
        }
    }

    /// Run `work`, exchanging every bucket as its gradients arrive: on a communication thread
    /// when overlapping, else all after `work` returns. Also returns the time spent exchanging
    /// and the part of it the training thread waited for after `work`.
    fn exchange_during<R, E: From<anychip_core::Error>>(
        &self,
        out: Option<&[Tensor]>,
        work: impl FnOnce(&mut dyn FnMut(usize, Tensor) -> Result<()>) -> std::result::Result<R, E>,
    ) -> std::result::Result<(R, Duration, Duration), E> {
        let (tx, rx) = mpsc::channel::<Handed>();
        let sender = |tx: mpsc::Sender<Handed>| {
            move |i: usize, g: Tensor| -> Result<()> {
                if i >= self.params.len() || g.shape() != self.params[i].shape() {
                    return Err(err(format!("gradient {i} of shape {:?} does not match its parameter", g.shape())));
                }
                tx.send(Handed::Grad(i, g.contiguous()?))
                    .map_err(|_| err("the gradient-exchange thread stopped early (its error follows)"))
            }
        };
        if !self.overlap {
            let r = work(&mut sender(tx.clone()))?;
            let _ = tx.send(Handed::Done);
            drop(tx);
            let t0 = Instant::now();
            let busy = self.exchange_handed(rx, out)?;
            return Ok((r, busy, t0.elapsed()));
        }
        std::thread::scope(|s| {
            let worker = s.spawn(|| {
                let _g = no_grad();
                self.exchange_handed(rx, out)
            });
            let r = work(&mut sender(tx.clone()));
            let t0 = Instant::now();
            if r.is_ok() {
                let _ = tx.send(Handed::Done);
            }
            // On an error the worker sees the channel close before Done and stops without
            // entering another collective.
            drop(tx);
            // The worker's error first: the training thread's may only say the worker stopped.
            let busy = worker.join().map_err(|_| err("the gradient-exchange thread panicked"))??;
            Ok((r?, busy, t0.elapsed()))
        })
    }

    /// Receive gradients and exchange each bucket, in descending order, once all of its
    /// parameters' gradients are in. Returns the time spent exchanging. Stops quietly when the
    /// sender goes away before `Done` (the training thread failed).
    fn exchange_handed(&self, rx: mpsc::Receiver<Handed>, out: Option<&[Tensor]>) -> Result<Duration> {
        let np = self.params.len();
        let mut grads: Vec<Option<Tensor>> = vec![None; np];
        let mut arrived = vec![false; np];
        let mut missing = vec![0usize; self.buckets.len()];
        // Buckets still to exchange that each parameter is in: its gradient is freed at zero.
        let mut pending: Vec<usize> = self.param_buckets.iter().map(|b| b.len()).collect();
        for pb in &self.param_buckets {
            for &k in pb {
                missing[k] += 1;
            }
        }
        let mut busy = Duration::ZERO;
        let mut next = self.buckets.len();
        while next > 0 {
            if missing[next - 1] == 0 {
                let k = next - 1;
                let t = Instant::now();
                let srcs: Vec<Option<&Tensor>> = grads.iter().map(|g| g.as_ref()).collect();
                self.exchange_bucket(k, &srcs, out)?;
                busy += t.elapsed();
                for i in self.pieces(self.buckets[k].clone()).iter().map(|pc| pc.param) {
                    pending[i] -= 1;
                    if pending[i] == 0 {
                        grads[i] = None;
                    }
                }
                next -= 1;
                continue;
            }
            let fresh: Vec<(usize, Tensor)> = match rx.recv() {
                Ok(Handed::Grad(i, g)) if !arrived[i] => vec![(i, g)],
                Ok(Handed::Grad(..)) => Vec::new(),
                Ok(Handed::Done) => (0..np)
                    .filter(|&i| !arrived[i])
                    .map(|i| Ok((i, Tensor::zeros(&self.port, self.params[i].shape(), DType::F32)?)))
                    .collect::<Result<_>>()?,
                Err(_) => return Ok(busy),
            };
            for (i, g) in fresh {
                arrived[i] = true;
                for &k in &self.param_buckets[i] {
                    missing[k] -= 1;
                }
                grads[i] = Some(g);
            }
        }
        Ok(busy)
    }

    /// One ZeRO-1 AdamW update from this rank's `grads` with learning rate `lr`: average,
    /// clip by the global norm, update the owned shard, all-gather the weights. Returns the
    /// pre-clipping global norm of the averaged gradients as a `[1]` tensor.
    pub fn zero_step(&mut self, grads: &[Tensor], lr: f32) -> Result<Tensor> {
        let _g = no_grad();
        self.check_grads(grads)?;
        if self.zero.is_none() {
            return Err(err("zero_step on a replicated optimizer; use average_grads"));
        }
        let grads: Vec<Tensor> = grads.iter().map(|g| g.contiguous()).collect::<Result<_>>()?;
        let srcs: Vec<Option<&Tensor>> = grads.iter().map(Some).collect();
        let t0 = Instant::now();
        for k in 0..self.buckets.len() {
            self.exchange_bucket(k, &srcs, None)?;
        }
        let reduce = t0.elapsed();
        drop(srcs);
        drop(grads);
        self.zero_update(lr, reduce, reduce, None)
    }

    /// The rest of a ZeRO-1 step once every block holds its averaged gradient: global norm,
    /// clipping, AdamW on the owned shard, all-gather of the weights. `reduce_busy` and
    /// `reduce_exposed` are the reduce-scatter half's times, for the statistics; `extra_sq` is
    /// added to the squared norm (see [`DataParallel::zero_step_during_with`]).
    fn zero_update(
        &mut self,
        lr: f32,
        reduce_busy: Duration,
        reduce_exposed: Duration,
        extra_sq: Option<&Tensor>,
    ) -> Result<Tensor> {
        let _g = no_grad();
        let world = self.world();
        let z = self.zero.as_ref().ok_or_else(|| err("zero_update on a replicated optimizer"))?;
        // |g|^2 = sum over ranks of the squared norms of their blocks (padding is zero).
        let refs: Vec<&Tensor> = z.blocks.iter().collect();
        let local = grad_norm(&refs)?;
        let sq = local.mul(&local)?;
        self.coll.all_reduce(&sq.view())?;
        let norm = match extra_sq {
            Some(e) => sq.add(e)?.sqrt()?,
            None => sq.sqrt()?,
        };
        // As AdamW::step: scale = clip / max(norm, clip), kept on the device.
        let scale = if self.adamw.grad_clip > 0.0 {
            let clip = norm.scalar_like(self.adamw.grad_clip as f64)?;
            Some(clip.div(&norm.maximum(&clip)?)?)
        } else {
            None
        };
        let z = self.zero.as_mut().expect("checked above");
        z.step += 1;
        for o in &z.owned {
            let pc = o.piece;
            let param = self.params[pc.param].reshape(&[-1])?.narrow(0, pc.at, pc.len)?;
            let grad = z.blocks[o.bucket].narrow(0, pc.pos, pc.len)?;
            let hp = AdamWParams {
                lr,
                beta1: self.adamw.beta1,
                beta2: self.adamw.beta2,
                eps: self.adamw.eps,
                weight_decay: if self.decay[pc.param] { self.adamw.weight_decay } else { 0.0 },
            };
            adamw_step(&param, &grad, &o.m, &o.v, scale.as_ref(), hp, z.step)?;
        }
        let z = self.zero.as_ref().expect("checked above");
        let t1 = Instant::now();
        for (k, b) in self.buckets.iter().enumerate() {
            let (l, n) = (b.len(), b.len() / world);
            // The block is free again: fill it with this rank's updated weights (padding zero).
            self.port.fill(&z.blocks[k].view(), 0.0)?;
            for o in z.owned.iter().filter(|o| o.bucket == k) {
                self.move_elems(&self.params[o.piece.param], o.piece.at, &z.blocks[k], o.piece.pos, o.piece.len)?;
            }
            self.coll.all_gather(&flat_view(&z.blocks[k], 0, n), &flat_view(&self.flat, 0, l))?;
            self.unpack(&self.flat, b.clone(), &self.params)?;
        }
        // The update between the two halves is computation, not communication.
        let gather = t1.elapsed();
        self.count_exchange(reduce_busy + gather, reduce_exposed + gather);
        Ok(norm)
    }

    /// Full AdamW moments `(m, v)`, one F32 tensor per parameter, on every rank: under ZeRO-1
    /// gathered from the shards (for a checkpoint); `None` when replicated (the optimizer has them).
    pub fn gather_moments(&self) -> Result<Option<(Vec<Tensor>, Vec<Tensor>)>> {
        let _g = no_grad();
        let Some(z) = &self.zero else { return Ok(None) };
        let world = self.world();
        let mut both = Vec::new();
        for pick in [|o: &Owned| o.m.clone(), |o: &Owned| o.v.clone()] {
            let full: Vec<Tensor> =
                self.params.iter().map(|p| Tensor::zeros(&self.port, p.shape(), DType::F32)).collect::<Result<_>>()?;
            for (k, b) in self.buckets.iter().enumerate() {
                let (l, n) = (b.len(), b.len() / world);
                self.port.fill(&z.blocks[k].view(), 0.0)?;
                for o in z.owned.iter().filter(|o| o.bucket == k) {
                    self.move_elems(&pick(o), 0, &z.blocks[k], o.piece.pos, o.piece.len)?;
                }
                self.coll.all_gather(&flat_view(&z.blocks[k], 0, n), &flat_view(&self.flat, 0, l))?;
                self.unpack(&self.flat, b.clone(), &full)?;
            }
            both.push(full);
        }
        let v = both.pop().expect("two");
        Ok(Some((both.pop().expect("two"), v)))
    }

    /// Under ZeRO-1, take this rank's shard of full moments `m`, `v` (per parameter, e.g. read
    /// from a checkpoint written by any number of ranks) and the optimizer's step count.
    pub fn load_moments(&mut self, m: &[Tensor], v: &[Tensor], step: u64) -> Result<()> {
        let _g = no_grad();
        let Some(z) = &self.zero else { return Ok(()) };
        self.check_grads(m)?;
        self.check_grads(v)?;
        for o in &z.owned {
            let pc = o.piece;
            self.move_elems(&m[pc.param], pc.at, &o.m, 0, pc.len)?;
            self.move_elems(&v[pc.param], pc.at, &o.v, 0, pc.len)?;
        }
        self.zero.as_mut().expect("checked").step = step;
        Ok(())
    }

    /// Element-wise sums of `values` over ranks (losses, evaluation totals), on every rank.
    pub fn sum(&self, values: &[f32]) -> Result<Vec<f32>> {
        let t = Tensor::from_f32(&self.port, values, &[values.len()], DType::F32)?;
        self.coll.all_reduce(&t.view())?;
        t.to_vec_f32()
    }

    fn check_grads(&self, grads: &[Tensor]) -> Result<()> {
        if grads.len() != self.params.len() {
            return Err(err(format!("{} gradients for {} parameters", grads.len(), self.params.len())));
        }
        for (g, p) in grads.iter().zip(&self.params) {
            if g.shape() != p.shape() {
                return Err(err(format!("gradient of shape {:?} for a parameter of shape {:?}", g.shape(), p.shape())));
            }
        }
        Ok(())
    }
}

/// Elements `at .. at + len` of contiguous `t`, as a rank-1 view.
fn flat_view(t: &Tensor, at: usize, len: usize) -> View {
    View {
        buf: t.buffer().clone(),
        dtype: t.dtype(),
        layout: Layout { shape: vec![len], strides: vec![1], offset: t.layout().offset + at },
    }
}

fn err(msg: impl Into<String>) -> anychip_core::Error {
    anychip_core::Error::Port(anychip_port::PortError::Invalid(msg.into()))
}
