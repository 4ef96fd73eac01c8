//! The MLP block: a dense (gated or plain) MLP, or routed and shared experts with their
//! all-to-all, expert tensor parallelism, the unfused extras some models carry and what the
//! recompute modules rerun.

use super::*;

impl Ctx<'_> {
    /// Whether the experts' grouped MLP runs as Transformer Engine's fused CuTe DSL kernels: the
    /// stack asks for it and the recipe is MXFP8 (`fuse_forward_ops` fuses nothing otherwise).
    pub(super) fn fuses_expert_mlp(&self) -> bool {
        self.stack.fused_expert_mlp && self.precision == Precision::Fp8
    }

    /// One MLP block, dense or a mixture of experts: its norm, matmuls, the experts' all-to-all
    /// (and expert-TP pair) and, around a dense MLP or shared experts, the TP pair.
    pub(super) fn mlp_block(&self, moe: bool) -> LayerCost {
        let a = self.a;
        let tok = self.tok;
        let mut c = LayerCost::default();
        let MlpShape { inside: mlp_inside, routed, inside_linear_inputs } = match (moe, a.moe) {
            (true, Some(m)) => self.routed_experts(&m, &mut c),
            _ => self.dense_mlp(&mut c),
        };
        c.act_bytes_selective = tok * (self.outside_bytes() + mlp_inside);
        c.act_bytes = c.act_bytes_selective;
        (c.module_bytes, c.module_rerun) = self.mlp_recompute(routed);
        let (extra_fwd, extra_bwd) = self.unfused_expert_extras(routed);
        if self.l.modules.moe_act && !self.stack.fused_expert_mlp {
            // The clamp runs inside the checkpointed activation, so it reruns with it.
            c.module_rerun += self.unfused_clamp(routed).0;
        }
        if self.l.modules.moe && routed > 0.0 {
            // The whole MoE layer reruns: all it stores but its input leaves memory (what moe_act
            // and shared_experts would drop is part of it; its linear inputs as stored, quantized
            // in FP8), and backward reruns its forward GEMMs, element-wise extras and the forward
            // all-to-all pair (half of `ep`).
            let (norm_bytes, norm_rerun) = self.norm_recompute();
            let quantized_saving = self.quantized_saving(inside_linear_inputs);
            c.module_bytes = norm_bytes + tok * mlp_inside - quantized_saving;
            c.module_rerun = norm_rerun + c.linear_fwd + extra_fwd + c.ep / 2.0;
        }
        // A dense MLP (or a MoE layer's shared experts, split over TP as one) gathers the
        // sequence-parallel tokens and reduce-scatters its output. Routed experts take the
        // chip's own tokens to the all-to-all and back (Megatron-Core's dispatchers): no TP pair
        // of their own, the expert-TP pair in `ep` where etp > 1.
        let tp_pair = match a.moe {
            Some(m) if moe && m.shared == 0 => 0.0,
            _ => self.tp_pair(),
        };
        c.fwd = c.linear_fwd + extra_fwd;
        c.bwd = 2.0 * c.linear_fwd + extra_bwd;
        c.tp = 2.0 * tp_pair;
        c.tp_fwd = tp_pair;
        // The dense MLP rerun under `mlp` gathers its input and reduce-scatters its output again.
        c.tp_module_rerun = if self.l.modules.mlp && routed == 0.0 { tp_pair } else { 0.0 };
        c
    }

    /// A dense MLP's GEMMs and linear inputs into `c`, and what it stores.
    fn dense_mlp(&self, c: &mut LayerCost) -> MlpShape {
        let a = self.a;
        let (h, t, tok) = (a.d_model as f64, self.t(), self.tok);
        let f = a.d_ff as f64;
        c.linear_fwd = self.linear(2.0 * tok * a.dense_mlp_params / t, tok, a.dense_mlp_params / h / t, h);
        c.linear_inputs = tok * (h + f) / t;
        MlpShape { inside: 2.0 * (a.mlp_up as f64 + 1.0) * f / t, routed: 0.0, inside_linear_inputs: 0.0 }
    }

    /// A MoE layer's experts (routed, shared, a latent MoE's projections) and router: their
    /// GEMMs, stored bytes, linear inputs, what the fused expert MLP takes off them and the
    /// all-to-all into `c`, and what the layer stores and routes.
    fn routed_experts(&self, m: &Moe, c: &mut LayerCost) -> MlpShape {
        let a = self.a;
        let (h, t, tok) = (a.d_model as f64, self.t(), self.tok);
        let fe = m.expert_d_ff as f64;
        let (mats, io) = (m.expert_matrices(), m.expert_io(a.d_model));
        // Shared experts run as one dense MLP of their summed width.
        let fs = (m.shared_d_ff * m.shared) as f64;
        let (e, et) = (self.l.ep as f64, self.l.etp as f64);
        let routed = tok / t * m.top_k as f64;
        // Under expert tensor parallelism a chip runs the `etp` ranks' gathered copies
        // through its 1/etp slice of each expert: the same FLOPs, taller and narrower GEMMs.
        let per_expert = (routed * et * e / m.experts as f64).max(1.0);
        c.linear_fwd = self.linear(2.0 * mats * io * fe * routed, per_expert, fe / et, io);
        if m.latent > 0 {
            // The projections to the latent width before routing and back after it.
            c.linear_fwd += 2.0 * self.linear(2.0 * tok * h * io / t, tok, io / t, h);
        }
        if m.shared > 0 {
            c.shared_fwd = self.linear(2.0 * mats * h * fs * tok / t, tok, fs / t, h);
            c.linear_fwd += c.shared_fwd;
        }
        c.linear_fwd += self.bf16(2.0 * h * m.experts as f64 * tok / t, tok, m.experts as f64, h);
        // Stored: the permuted inputs (all `etp` ranks' copies, gathered), up outputs and
        // activation of each routed copy (its 1/etp slice of them) and a latent MoE's two
        // projection inputs per token.
        let kept = 2.0 * mats * fe;
        let latent_in = if m.latent > 0 { tok / t * (h + io) } else { 0.0 };
        let inside = (routed * (2.0 * io * et + kept) + tok / t * 2.0 * mats * fs + 2.0 * latent_in) / tok;
        c.moe_bytes = routed * (2.0 * io * et + kept);
        let inside_linear_inputs = routed * (io * et + fe) + tok / t * fs + latent_in;
        c.linear_inputs = inside_linear_inputs + tok / t * h * m.shared as f64;
        if self.fuses_expert_mlp() {
            // The fused grouped MLP (Transformer Engine's ForwardGroupedMLP_CuTeGEMMSwiGLU_MXFP8
            // and its backward twin) applies the activation, the routing probabilities and
            // the MXFP8 cast of the down projection's input in the up projection's epilogue;
            // Transformer Engine fuses them only under an MXFP8 recipe (fuse_forward_ops).
            c.moe_fused_bytes = routed * kept;
            c.fused_casts = routed * fe;
        }
        if self.l.ep > 1 {
            c.ep = self.expert_all_to_all(tok / t, m.top_k, m.experts, io);
        }
        c.ep += 2.0 * self.expert_tensor_pair(routed, io);
        MlpShape { inside, routed, inside_linear_inputs }
    }

    /// Seconds of the expert-parallel all-to-all per micro-batch: dispatch and combine forward, the
    /// same two backward, for `tokens` tokens per chip each routed to `top_k` of `experts` experts.
    ///
    /// Each routed copy is `width` wide (the hidden width, or a latent MoE's latent width).
    /// A plain all-to-all sends every routed copy (2 width bytes) to its expert's rank: the copies for
    /// ranks in the chip's scale-up domain over its link, the others over its NIC. A flex
    /// dispatcher (DeepEP, HybridEP) sends a token over the scale-out network once per other domain
    /// that holds any of its experts and fans it out there over the scale-up link, so a domain's
    /// NICs carry tokens x the expected number of other domains hit, not tokens x top-k x the
    /// other domains' share (DeepSeek-V3 report section 3.2.2).
    ///
    /// An expert-parallel group's ranks sit `etp` chips apart (Megatron-Core orders an expert's
    /// ranks etp, then ep), so it spans ep x etp chips and a domain holds domain / etp of them.
    fn expert_all_to_all(&self, tokens: f64, top_k: usize, experts: usize, width: f64) -> f64 {
        let h = width;
        let (e, span) = (self.l.ep as f64, self.l.expert_model_parallel());
        let d = (self.r.domain.min(span) / self.l.etp).max(1) as f64;
        let copies = tokens * top_k as f64;
        let crosses = self.r.crosses(span);
        let (intra, inter) = if self.stack.moe_flex_dispatcher && crosses {
            let other_domains = other_domains_hit(top_k, experts, (e / d).round() as usize);
            (copies * 2.0 * h * (d - 1.0) / d, tokens * 2.0 * h * other_domains)
        } else {
            (copies * 2.0 * h * (d - 1.0) / e, copies * 2.0 * h * (e - d) / e)
        };
        let inter_s = match self.r.scaleout {
            Some(so) if crosses => inter / so,
            _ => 0.0,
        };
        let hop = self.k.hop_latency_us * 1e-6 * if crosses { 2.0 } else { 1.0 };
        4.0 * ((intra / self.r.scaleup).max(inter_s) + 2.0 * hop)
    }

    /// One direction's collective pair of expert tensor parallelism (forward, or backward): the
    /// `etp` ranks all-gather the `routed` copies (each `width` wide, BF16) the all-to-all brought
    /// each of them before the experts and reduce-scatter the experts' outputs after them
    /// (Megatron-Core's dispatchers, `gather_from_sequence_parallel_region` over the expert TP
    /// group); rings over the scale-up link as the TP pair's. 0 at etp = 1.
    fn expert_tensor_pair(&self, routed: f64, width: f64) -> f64 {
        let et = self.l.etp;
        if et == 1 {
            return 0.0;
        }
        let ef = et as f64;
        let bytes = routed * ef * width * 2.0;
        comm(2.0 * (ef - 1.0) / ef * bytes, self.r.link(1, et), 2.0 * (ef - 1.0), self.k, self.r.crosses(et))
    }

    /// Seconds, forward and backward, of the element-wise kernels Megatron-Core's grouped expert
    /// MLP runs outside its fused activation for experts with biases or a clamped activation
    /// (GPT-OSS), for `routed` routed token copies; (0, 0) for other experts.
    fn unfused_expert_extras(&self, routed: f64) -> (f64, f64) {
        if self.fuses_expert_mlp() {
            return (0.0, 0.0);
        }
        let (clamp_fwd, clamp_bwd) = self.unfused_clamp(routed);
        let (bias_fwd, bias_bwd) = self.unfused_output_bias(routed);
        (clamp_fwd + bias_fwd, clamp_bwd + bias_bwd)
    }

    /// The clamp before the fused quick-GEGLU (`weighted_bias_quick_geglu_impl`, megatron/core/
    /// fusions/fused_bias_geglu.py, at the Megatron-LM submodule commits of Megatron-Bridge v0.2.0
    /// to v0.4.2, containers 25.11 to 26.04.01): two `clamp`s over the halves of the
    /// fc1 output (2 fe per routed copy, BF16) and a `torch.cat` of them, each reading and writing
    /// its tensor: 4 x 2 fe x 2 B forward. Backward: each clamp's gradient reads the gradient and
    /// the input and writes the gradient (3 x fe x 2 B each), and `chunk`'s backward concatenates
    /// the two halves (2 x 2 fe x 2 B). Streaming traffic at the measured bandwidth, no fitted pass count.
    fn unfused_clamp(&self, routed: f64) -> (f64, f64) {
        let Some(m) = self.a.moe.filter(|m| m.clamped_activation) else {
            return (0.0, 0.0);
        };
        let fe = m.expert_d_ff as f64;
        let bw = self.r.mem_bw * MEM_BW_EFF;
        (routed * 16.0 * fe / bw, routed * 20.0 * fe / bw)
    }

    /// The fc2 bias of experts with biases: Megatron-Core's `TEGroupedMLP._apply_bias` (megatron/
    /// core/transformer/moe/experts.py, same commits) adds bias x routing probability per local expert,
    /// `(t + b * p).to(bf16)`, over the h-wide output of each routed copy. The probabilities are
    /// FP32 behind a flex dispatcher (token_dispatcher.py casts them for DeepEP and HybridEP) and
    /// BF16 otherwise (the router's softmax is `type_as` its BF16 logits unless
    /// `moe_router_dtype` is set, which no GPT-OSS recipe does); with p bytes each, forward: b * p
    /// written (p), the sum read (2 + p) and written (p), `torch.cat` (p + p) and, in FP32, the
    /// cast back (4 + 2). Backward: in FP32 the two casts (2 + 4, 4 + 2); the gradients of b and
    /// p, each a product read, written and reduced (3 p each).
    fn unfused_output_bias(&self, routed: f64) -> (f64, f64) {
        let Some(_) = self.a.moe.filter(|m| m.expert_bias) else {
            return (0.0, 0.0);
        };
        let (h, bw) = (self.a.d_model as f64, self.r.mem_bw * MEM_BW_EFF);
        let (p, casts) = if self.stack.moe_flex_dispatcher { (4.0, 1.0) } else { (2.0, 0.0) };
        let fwd = 2.0 + 5.0 * p + 6.0 * casts;
        let bwd = 6.0 * p + 12.0 * casts;
        (routed * fwd * h / bw, routed * bwd * h / bw)
    }

    /// Bytes the layout's MLP recompute modules keep from being stored in one MLP block with
    /// `routed` routed token copies (0 for a dense MLP), and the seconds their forward reruns in
    /// backward.
    fn mlp_recompute(&self, routed: f64) -> (f64, f64) {
        let (a, m) = (self.a, self.l.modules);
        let (h, t) = (a.d_model as f64, self.t());
        // A stored linear input is its 1-byte cast in FP8 (Transformer Engine keeps that copy).
        let lin = self.precision.operand_bytes();
        let (mut bytes, mut rerun) = self.norm_recompute();
        if m.moe_act && routed > 0.0 {
            let (fe, ups) = a.moe.map_or((0.0, 0.0), |x| (x.expert_d_ff as f64, x.expert_up as f64));
            // The activation's output (fe per routed copy); rerun: read the up outputs (ups fe x
            // 2 B), write the output.
            bytes += routed * fe * lin;
            rerun += routed * fe * (2.0 * ups + lin) / self.r.mem_bw;
        }
        if let Some(x) = a.moe.filter(|x| m.shared_experts && routed > 0.0 && x.shared > 0) {
            // The shared experts' up outputs and activation output (BF16, or the down
            // projection's cast input), as the dense MLP's below; rerun: their GEMMs and activation.
            let (fs, ups) = ((x.shared_d_ff * x.shared) as f64, x.expert_up as f64);
            let (b, r) = self.whole_mlp_rerun(2.0 * ups * fs + lin * fs, (ups + 1.0) * h * fs / t, fs / t);
            (bytes, rerun) = (bytes + b, rerun + r);
        }
        if m.mlp && routed == 0.0 && a.dense_mlp_params > 0.0 {
            // The up projections' outputs (BF16) and the activation's output (the down
            // projection's stored input); rerun: the MLP's GEMMs and its activation, which reads
            // the up outputs and writes its own.
            let f = a.d_ff as f64;
            let ups = 2.0 * a.mlp_up as f64 * f;
            let params = a.dense_mlp_params / t;
            let (b, r) = self.whole_mlp_rerun(ups + lin * f, params, params / h);
            (bytes, rerun) = (bytes + b, rerun + r);
        }
        (bytes, rerun)
    }

    /// An MLP checkpointed whole (the modules `mlp` and `shared_experts`), which stores `stored`
    /// bytes a token inside it (its up projections' and activation's outputs): (bytes it no
    /// longer stores, seconds backward reruns: its GEMMs of `params` weights per rank, shaped
    /// tok x h -> `n` as the block prices them, and its activation, which reads and writes those
    /// bytes once).
    fn whole_mlp_rerun(&self, stored: f64, params: f64, n: f64) -> (f64, f64) {
        let (h, t, tok) = (self.a.d_model as f64, self.t(), self.tok);
        let bytes = tok * stored / t;
        (bytes, self.linear(2.0 * tok * params, tok, n, h) + bytes / self.r.mem_bw)
    }

    /// torchtitan's per-op selective checkpointing ([`Modules::op_sac`]) of one layer whose linear
    /// GEMMs take `linear_fwd` seconds forward and whose stored activations are `act_bytes`:
    /// (bytes it does not store, seconds it reruns in backward); (0, 0) when it is off.
    ///
    /// It keeps the layer's input, the attention core's output and the outputs of every other
    /// matmul in the layer's order (q, k, v, o, the MLP's up projections, its down projection:
    /// for Llama it keeps q, v and w1 and reruns k, o and w3, 36% of the linear FLOPs); a MoE
    /// layer is taken as half of its linear time. Every element-wise op reruns too: the stack's
    /// passes over the stored bytes, as in a full recompute.
    pub(super) fn op_sac(&self, moe: bool, linear_fwd: f64, act_bytes: f64) -> (f64, f64) {
        if !self.l.modules.op_sac {
            return (0.0, 0.0);
        }
        let a = self.a;
        let (h, t, tok) = (a.d_model as f64, self.t(), self.tok);
        let (qk, kv, v, f) = (a.qk_dim as f64, a.kv_exchange as f64 / 2.0, a.v_dim as f64, a.d_ff as f64);
        // Output widths of the matmuls in forward order, and the share of the FLOPs the odd ones
        // (rerun) carry; each has the weight h x width except o (v x h) and down (f x h).
        let mut widths = vec![(qk, h), (kv, h), (kv, h), (h, v)];
        widths.extend(std::iter::repeat_n((f, h), a.mlp_up));
        widths.push((h, f));
        let total: f64 = widths.iter().map(|(o, i)| o * i).sum();
        let rerun: f64 = widths.iter().skip(1).step_by(2).map(|(o, i)| o * i).sum();
        let kept_out: f64 = widths.iter().step_by(2).map(|(o, _)| o).sum();
        let share = if moe { 0.5 } else { rerun / total };
        let kept = tok * 2.0 * (h + v + kept_out) / t;
        let elementwise = passes(self.k, self.stack) * act_bytes / self.r.mem_bw;
        ((act_bytes - kept).max(0.0), share * linear_fwd + elementwise)
    }
}

/// What an MLP block's FFN stores and routes, per token of the micro-batch ([`Ctx::mlp_block`]).
pub(super) struct MlpShape {
    /// Bytes stored inside the block (beyond its input), per token.
    pub(super) inside: f64,
    /// Routed token copies on the chip (0 for a dense MLP).
    pub(super) routed: f64,
    /// Of the linear inputs, those stored inside the MoE layer (not its input).
    pub(super) inside_linear_inputs: f64,
}
