//! A pipeline stage: its layers in their kinds' proportions, the last stage's LM head and
//! multi-token prediction, the binding stage, one micro-batch's time through it and the
//! activation memory its micro-batches in flight hold.

use super::*;

impl Ctx<'_> {
    /// Activation bytes the heaviest chip holds, on the chip and in host memory: what one
    /// micro-batch stores under the layout's recompute mode, times the micro-batches in flight on
    /// the first pipeline stage; `offload` of the stage's layers keep theirs in host memory, and
    /// the chip keeps two layers' worth of staging buffers (one layer leaving, one coming back).
    /// `act_stored`: what one micro-batch stores across the stage ([`Self::stored_per_micro_batch`]).
    fn activation_memory(&self, sum: &LayerCost, act_stored: f64, stage_layers: f64, n_micro: usize) -> (f64, f64) {
        self.stage_activations(sum, act_stored, stage_layers, self.first_stage_in_flight(n_micro))
    }

    /// Micro-batches' worth of the first stage's activations in flight: 1F1B and ZB-H1 keep
    /// min(m, p), ZB-H2 min(m, 2p - 1), DualPipe min(m, p + 1) ([`Schedule`]); interleaving adds
    /// (p-1)/(p v) of that (Korthikanti, section 4.2.3).
    fn first_stage_in_flight(&self, n_micro: usize) -> f64 {
        let (p, v) = (self.l.pp as f64, self.l.v as f64);
        let warm = match self.l.schedule {
            Schedule::OneFOneB | Schedule::ZbH1 => self.l.pp,
            Schedule::ZbH2 => 2 * self.l.pp - 1,
            Schedule::DualPipe => self.l.pp + 1,
        };
        (n_micro.min(warm) as f64) * if self.l.v > 1 { 1.0 + (p - 1.0) / (p * v) } else { 1.0 }
    }

    /// The last pipeline stage's stored activations (and those held in host memory): 1F1B starts
    /// its backward after one forward there, so one micro-batch is in flight; the interleaved
    /// schedule warms the last rank up with (v-1) p chunks of a v-th of its layers, so
    /// ((v-1) p + 1) / v stage-fulls (Megatron-Core's `get_pp_rank_microbatches`: warm-up
    /// (p - rank - 1) x 2 + (v - 1) p), never more than the first stage holds.
    fn last_stage_activation_memory(
        &self,
        sum: &LayerCost,
        act_stored: f64,
        stage_layers: f64,
        n_micro: usize,
    ) -> (f64, f64) {
        let (p, v) = (self.l.pp as f64, self.l.v as f64);
        let in_flight = (((v - 1.0) * p + 1.0) / v).min(self.first_stage_in_flight(n_micro));
        self.stage_activations(sum, act_stored, stage_layers, in_flight)
    }

    /// Under pipeline parallelism, the activations (on the chip, in host memory) and logits of
    /// the stage whose memory peaks: the first stage holds the most micro-batches in flight, the
    /// last one the logits (and the multi-token prediction modules' activations); the chip needs
    /// the larger of the two. The first stage is counted with the most layers a stage without
    /// the LM head holds (the second stage's where the first holds fewer: one micro-batch fewer
    /// in flight there, counted as the first's).
    /// `first_sum`: the costs of a stage with the most layers a stage without the head holds.
    fn peak_stage_activations(
        &self,
        split: &StageSplit,
        last: &LastStage,
        first_sum: &LayerCost,
        n_micro: usize,
    ) -> (f64, f64, f64) {
        let body = split.body();
        let first_stored = self.stored_per_micro_batch(first_sum, body);
        let (first, offloaded) = self.activation_memory(first_sum, first_stored, body, n_micro);
        let last_stored = self.stored_per_micro_batch(&last.layers, split.last);
        let (last_acts, _) = self.last_stage_activation_memory(&last.layers, last_stored, split.last, n_micro);
        let logits = (1.0 + last.depths) * logits_memory(self.stack, last.logits_bytes);
        if last_acts + logits > first {
            (last_acts, offloaded, logits)
        } else {
            (first, offloaded, 0.0)
        }
    }

    /// Stored activations of a stage with `in_flight` micro-batches' worth in flight, and the part
    /// of them held in host memory under `offload`.
    fn stage_activations(&self, sum: &LayerCost, act_stored: f64, stage_layers: f64, in_flight: f64) -> (f64, f64) {
        let l = &self.l;
        let off = self.offloaded_share(stage_layers);
        let staging = if off > 0.0 { 2.0 * act_stored / stage_layers } else { 0.0 };
        let mut activations = act_stored * in_flight * (1.0 - off) + staging;
        if l.recompute == Recompute::Full {
            activations += sum.act_bytes / stage_layers; // one layer rematerialised during its backward
        }
        (activations, act_stored * in_flight * off)
    }

    /// Bytes saved by storing `linear_inputs` elements as their quantized copies: Transformer
    /// Engine keeps the quantized copy of each linear layer's input for the weight gradient, not
    /// the BF16 one (one byte instead of two in FP8, 0.5625 in NVFP4); a stack that keeps BF16
    /// inputs (`stores_quantized_inputs` false) saves nothing.
    pub(super) fn quantized_saving(&self, linear_inputs: f64) -> f64 {
        if self.stack.stores_quantized_inputs {
            linear_inputs * (2.0 - self.precision.operand_bytes())
        } else {
            0.0
        }
    }

    /// Bytes one micro-batch stores across the stage's layers under the layout's recompute mode.
    fn stored_per_micro_batch(&self, sum: &LayerCost, stage_layers: f64) -> f64 {
        let (l, tok) = (&self.l, self.tok);
        let h = self.a.d_model as f64;
        let quantized_saving = self.quantized_saving(sum.linear_inputs);
        match l.recompute {
            Recompute::None => sum.act_bytes - quantized_saving - sum.module_bytes,
            Recompute::Selective => sum.act_bytes_selective - quantized_saving - sum.module_bytes,
            Recompute::Full => {
                // The recomputed layers keep their inputs; a partial recompute's others keep all.
                let share = l.recomputed_share(stage_layers);
                share * stage_layers * 2.0 * tok * h / self.sp_split()
                    + (1.0 - share) * (sum.act_bytes - quantized_saving)
            }
        }
    }

    /// Seconds per micro-batch of moving the offloaded layers' stored activations (of `act_stored`
    /// a micro-batch stores across the stage) to host memory in forward and back in backward, each
    /// way at the chip's host link.
    fn offload_copies(&self, act_stored: f64, stage_layers: f64) -> f64 {
        let bytes = act_stored * self.offloaded_share(stage_layers);
        match self.r.host_link {
            Some(link) if bytes > 0.0 => 2.0 * bytes / link,
            _ => 0.0,
        }
    }

    /// Share of a stage's layers whose stored activations live in host memory.
    fn offloaded_share(&self, stage_layers: f64) -> f64 {
        (self.l.offload as f64).min(stage_layers) / stage_layers
    }

    /// The stage's layers ([`Self::stage`]) with the layout's `bf16_layers` share of the model's
    /// layers priced in BF16 under a quantized precision: their GEMMs at the BF16 rate, no casts,
    /// their stored linear inputs in BF16 (no quantized linear inputs).
    fn stage_in_precisions(&self, stage_layers: f64, moe_frac: f64) -> LayerCost {
        let share = (self.l.bf16_layers as f64 / self.a.layers as f64).min(1.0);
        if share == 0.0 || !self.precision.quantized() {
            return self.stage(stage_layers, moe_frac);
        }
        let bf16 = Ctx { precision: Precision::Bf16, ..*self };
        let mut kept = bf16.stage(stage_layers, moe_frac);
        (kept.linear_inputs, kept.fused_casts) = (0.0, 0.0);
        let mut sum = LayerCost::default();
        sum.add_scaled(&self.stage(stage_layers, moe_frac), 1.0 - share);
        sum.add_scaled(&kept, share);
        sum
    }

    /// The heaviest pipeline stage's layers (`stage_layers`, a `moe_frac` of them MoE) summed by
    /// kind, dense or MoE and full or windowed attention, in proportion to their counts; a
    /// hybrid's by block, attention, Mamba-2, dense MLP and MoE, in its pattern's proportions.
    pub(super) fn stage(&self, stage_layers: f64, moe_frac: f64) -> LayerCost {
        let win_frac = self.a.window.map_or(0.0, |(_, f)| f);
        if self.a.hybrid.is_some() {
            let b = self.a.blocks_per_layer();
            let blocks: [(f64, &dyn Fn() -> LayerCost); 6] = [
                (b.attention * (1.0 - win_frac), &|| self.attention_block(false)),
                (b.attention * win_frac, &|| self.attention_block(true)),
                (b.mamba, &|| self.mamba_block()),
                (b.gdn, &|| self.gdn_block()),
                (b.mlp, &|| self.mlp_block(false)),
                (b.moe, &|| self.mlp_block(true)),
            ];
            let mut sum = LayerCost::default();
            for (per_layer, cost) in blocks.into_iter().filter(|(w, _)| *w > 0.0) {
                sum.add_scaled(&cost(), per_layer * stage_layers);
            }
            return sum;
        }
        let kinds = [
            (false, false, (1.0 - moe_frac) * (1.0 - win_frac)),
            (false, true, (1.0 - moe_frac) * win_frac),
            (true, false, moe_frac * (1.0 - win_frac)),
            (true, true, moe_frac * win_frac),
        ];
        let mut sum = LayerCost::default();
        for (moe, win, frac) in kinds.into_iter().filter(|k| k.2 > 0.0) {
            sum.add_scaled(&self.layer(moe, win), frac * stage_layers);
        }
        sum
    }

    /// Fixed seconds per micro-batch (forward and backward) of `layers` layers, `moe_layers` of
    /// them MoE: `layer_overhead_us` per layer, the launches of its kernels, which a stack that
    /// replays the whole iteration as one CUDA graph does not pay; and `expert_overhead_us` per
    /// local expert of a MoE layer, its grouped-GEMM slice launching and draining on its own,
    /// which the fused expert MLP does not pay (its CuTe DSL kernels schedule every local
    /// expert's tiles in one grouped kernel: `tile_idx_to_expert_idx`).
    fn fixed_overhead(&self, layers: f64, moe_layers: f64) -> f64 {
        let k = self.k;
        // A hybrid's layer is one block, half a transformer layer's kernels.
        let layers = if self.a.hybrid.is_some() { layers / 2.0 } else { layers };
        let per_layer = if self.stack.full_iteration_cuda_graph { 0.0 } else { k.layer_overhead_us };
        let local_experts = self.a.moe.map_or(0.0, |m| (m.experts / self.l.ep) as f64);
        let per_expert = if self.fuses_expert_mlp() { 0.0 } else { k.expert_overhead_us };
        (layers * per_layer + moe_layers * local_experts * per_expert) * 1e-6
    }

    /// The last pipeline stage's `layers` (a `moe_frac` of them MoE), its multi-token
    /// prediction modules (per depth one attention and one MLP block and the projection of
    /// [embedding; hidden state]) and its LM head and loss (BF16), once per prediction depth.
    fn last_stage(&self, layers: f64, moe_frac: f64) -> LastStage {
        let mut sum = self.stage_in_precisions(layers, moe_frac);
        let depths = self.a.mtp.map_or(0.0, |m| m.depths as f64);
        if depths > 0.0 {
            sum.add_scaled(&self.mtp_block(), depths);
        }
        let (h, t, vocab) = (self.a.d_model as f64, self.t(), self.a.vocab as f64);
        let head = (1.0 + depths) * self.bf16(2.0 * self.tok * h * vocab / t, self.tok, vocab / t, h);
        LastStage { layers: sum, depths, head, logits_bytes: self.tok * vocab / t * 4.0 }
    }
}

/// The last pipeline stage's work per micro-batch ([`Ctx::last_stage`]).
pub(super) struct LastStage {
    /// Its layers and multi-token prediction modules.
    pub(super) layers: LayerCost,
    /// Multi-token prediction depths.
    pub(super) depths: f64,
    /// The forward GEMMs of its LM heads.
    pub(super) head: f64,
    /// One head's FP32 logits.
    pub(super) logits_bytes: f64,
}

impl LastStage {
    /// Seconds of its `layers` layers' and heads' GEMMs and attention under `l`'s recompute (the
    /// element-wise work aside; heads are never recomputed): what decides whether it or a stage
    /// without the head binds the pipeline.
    pub(super) fn work(&self, l: &Layout, layers: f64) -> f64 {
        layer_work(&self.layers, l, layers) + 3.0 * self.head
    }
}

/// Seconds of a stage's `layers` layers' GEMMs and attention, forward, backward and what `l`'s
/// recompute reruns.
fn layer_work(sum: &LayerCost, l: &Layout, layers: f64) -> f64 {
    let rerun = match l.recompute {
        Recompute::None => sum.module_rerun,
        Recompute::Selective => sum.attn_fwd + sum.module_rerun,
        Recompute::Full => l.recomputed_share(layers) * sum.fwd,
    };
    sum.fwd + sum.bwd + rerun
}

/// The expert-parallel all-to-all a micro-batch leaves exposed: under another micro-batch's
/// computation where the stack overlaps it (`overlap_ep`), else, where the stack computes the
/// shared experts during the dispatch and combine (`shared_expert_overlap`, Megatron-Core's
/// `moe_shared_expert_overlap` on its all-to-all dispatcher; DeepSeek-V2's HAI-LLM), under their
/// forward and backward GEMMs; else all of it.
fn ep_exposed(sum: &LayerCost, busy: f64, stack: &Stack, k: &Constants) -> f64 {
    if stack.overlap_ep {
        exposed(sum.ep, busy, true, k)
    } else if stack.shared_expert_overlap && !stack.moe_flex_dispatcher {
        exposed(sum.ep, 3.0 * sum.shared_fwd, true, k)
    } else {
        sum.ep
    }
}

/// The pipeline stage whose work sets the step ([`Ctx::binding_stage`]).
pub(super) struct BindingStage {
    /// The pipeline's split of the layers.
    pub(super) split: StageSplit,
    /// The last stage (layers, MTP modules, LM heads), binding or not.
    pub(super) last: LastStage,
    /// The MoE share of the layers, every stage priced in the model's proportions.
    pub(super) moe_frac: f64,
    /// Layers of the binding stage.
    pub(super) layers: f64,
    /// Its layers' (and MTP modules') costs per micro-batch.
    pub(super) sum: LayerCost,
    /// Under pipelining, the costs of the most layers a stage without the LM head holds
    /// ([`StageSplit::body`]): whether such a stage binds, and the first stage's memory.
    pub(super) body_sum: Option<LayerCost>,
    /// Its multi-token prediction depths (0 for a stage without the head).
    pub(super) depths: f64,
    /// LM heads on it (1 + depths on the last stage, else 0).
    pub(super) heads: f64,
    /// The forward GEMMs of its heads.
    pub(super) head: f64,
}

/// One micro-batch on the binding stage, seconds: what the step multiplies by the micro-batches.
pub(super) struct MicroBatch {
    /// GEMMs, attention, element-wise traffic and fixed costs, forward and backward.
    pub(super) compute: f64,
    /// What recompute reruns.
    pub(super) recompute: f64,
    /// Exposed tensor-, context-, expert- and pipeline-parallel communication and offload copies.
    pub(super) tp: f64,
    pub(super) cp: f64,
    pub(super) ep: f64,
    pub(super) pp: f64,
    pub(super) offload: f64,
    /// All of it, and its forward part (what the schedule's bubble is made of).
    pub(super) total: f64,
    pub(super) forward: f64,
    /// Activation bytes it stores across the stage.
    pub(super) act_stored: f64,
}

impl Ctx<'_> {
    /// Layers of the heaviest stage, split by kind in proportion: the last stage's, with the
    /// multi-token prediction modules and the LM head, unless an uneven split leaves a stage
    /// without them more work.
    pub(super) fn binding_stage(&self) -> BindingStage {
        let (a, l) = (self.a, &self.l);
        let split = l.stage_split(a.layers);
        let moe_frac = a.moe_layers() as f64 / a.layers as f64;
        let last = self.last_stage(split.last, moe_frac);
        let body = split.body();
        let body_sum = (l.pp > 1).then(|| self.stage_in_precisions(body, moe_frac));
        let (layers, sum, depths, heads) = match body_sum {
            Some(b) if body > split.last && layer_work(&b, l, body) > last.work(l, split.last) => (body, b, 0.0, 0.0),
            _ => (split.last, last.layers, last.depths, 1.0 + last.depths),
        };
        let head = if heads > 0.0 { last.head } else { 0.0 };
        BindingStage { split, last, moe_frac, layers, sum, body_sum, depths, heads, head }
    }

    /// Element-wise traffic of a micro-batch on `stage`: each stored byte is touched `passes`
    /// times forward, twice that backward. Routed tokens go through top-k, permutation,
    /// un-permutation and weighted combine: their own pass count (`moe_passes`).
    pub(super) fn elementwise(&self, stage: &BindingStage) -> f64 {
        let (k, stack, sum, bw) = (self.k, self.stack, &stage.sum, self.r.mem_bw);
        let dense_bytes = sum.act_bytes - sum.moe_bytes;
        let moe_elementwise = sum.moe_bytes - sum.moe_fused_bytes;
        let mut elem = (passes(k, stack) * dense_bytes + k.moe_passes * moe_elementwise) * 3.0 / bw
            + stage.heads * loss_traffic(k, stack, stage.last.logits_bytes) / bw;
        if self.precision.quantized() {
            // Transformer Engine casts every linear input to FP8 (AQT to INT8, the nvfp4 recipe to
            // FP4 alike): forward input, backward output gradient and the transposed copy for the
            // weight gradient; each cast reads the BF16 tensor twice (amax, then scale) and writes
            // the quantized operand.
            let per_cast = 4.0 + self.precision.operand_bytes();
            elem += 3.0 * per_cast * (sum.linear_inputs - sum.fused_casts) / bw;
        }
        elem
    }

    /// A micro-batch on `stage`: its compute, recompute and the communication it leaves exposed.
    pub(super) fn micro_batch(&self, stage: &BindingStage) -> MicroBatch {
        let (l, k, stack, rates, sum) = (&self.l, self.k, self.stack, self.r, &stage.sum);
        let elem = self.elementwise(stage);
        let mtp_moe = if self.a.moe.is_some() { stage.depths } else { 0.0 };
        let overhead = self.fixed_overhead(stage.layers + stage.depths, stage.layers * stage.moe_frac + mtp_moe);
        let compute = sum.fwd + sum.bwd + 3.0 * stage.head + elem + overhead;
        let share = l.recomputed_share(stage.layers);
        let recompute = match l.recompute {
            Recompute::None => sum.module_rerun,
            Recompute::Selective => sum.attn_fwd + sum.module_rerun,
            Recompute::Full => share * (sum.fwd + passes(k, stack) * sum.act_bytes / rates.mem_bw + overhead / 3.0),
        };
        let busy = compute + recompute;
        // A full recompute reruns the forward's TP collectives; torchtitan's per-op checkpointing
        // keeps the reduce-scatters' outputs (in its save list) and reruns the all-gathers: half.
        let tp_rerun = match (l.recompute, l.modules.op_sac) {
            (Recompute::Full, _) => share * sum.tp_fwd,
            (_, true) => 0.5 * sum.tp_fwd,
            _ => sum.tp_module_rerun,
        };
        let tp = exposed(sum.tp + tp_rerun, busy, stack.overlap_tp, k);
        // Ring attention overlaps the exchange with the attention it feeds, in every stack.
        let cp = exposed(sum.cp, sum.attn_fwd + sum.attn_bwd, true, k);
        let ep = ep_exposed(sum, busy, stack, k);
        let pp = self.pipeline_sends(busy);
        // Offload copies run on the copy engines, not the SMs (Megatron-Core's offloading streams):
        // hidden under the micro-batch's compute, only what outlasts it shows; taking no SMs, they
        // pay none of the contention the overlapped collectives pay.
        let act_stored = self.stored_per_micro_batch(sum, stage.layers);
        let offload = (self.offload_copies(act_stored, stage.layers) - busy).max(0.0);
        let total = busy + tp + cp + ep + pp + offload;
        // The schedule splits a micro-batch into its forward (with its third of the element-wise
        // work and fixed costs, the exposed communication in proportion) and its weight
        // gradients, whose GEMMs are as long as the forward's linears.
        let forward = total * (sum.fwd + stage.head + (elem + overhead) / 3.0) / busy;
        MicroBatch { compute, recompute, tp, cp, ep, pp, offload, total, forward, act_stored }
    }

    /// The exposed pipeline sends of a micro-batch (a send per chunk boundary, forward and
    /// backward), hidden up to `busy` where the stack overlaps them.
    fn pipeline_sends(&self, busy: f64) -> f64 {
        let (l, rates, k) = (&self.l, self.r, self.k);
        if l.pp == 1 {
            return 0.0;
        }
        let (h, v) = (self.a.d_model as f64, l.v as f64);
        let bytes = self.tok * h * 2.0 / self.sp_split();
        let span = l.tp * l.cp * l.dp * 2;
        let sends = comm(2.0 * v * bytes, rates.link(l.tp * l.cp * l.dp, span), 2.0 * v, k, rates.crosses(span));
        exposed(sends, busy, self.stack.overlap_pp, k)
    }

    /// The heaviest chip's memory: its states and the activations in flight on its stage.
    pub(super) fn memory(&self, stage: &BindingStage, states: &States, act_stored: f64, n_micro: usize) -> Memory {
        let (activations, offloaded, logits) = if let Some(first_sum) = &stage.body_sum {
            self.peak_stage_activations(&stage.split, &stage.last, first_sum, n_micro)
        } else {
            let (first, offloaded) = self.activation_memory(&stage.sum, act_stored, stage.layers, n_micro);
            (first, offloaded, stage.heads * logits_memory(self.stack, stage.last.logits_bytes))
        };
        Memory {
            weights: states.weights,
            gradients: states.gradients,
            optimizer: states.optimizer,
            gathered: states.gathered,
            activations,
            logits,
            reserve: self.k.reserve_gib * GIB,
            offloaded,
        }
    }
}
