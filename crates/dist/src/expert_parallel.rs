//! Expert parallelism's side of a training step: which ranks share experts, the experts'
//! gradients, their optimizer, and gathering them for a checkpoint.
//!
//! Layout: `world = replicas x ep` ranks, rank `r = replica * ep + member`. The `ep` consecutive
//! ranks of one replica form an expert group: member j holds experts `j E/ep .. (j+1) E/ep` of
//! every MoE layer, and the group's tokens reach them through all-to-all (`anychip_nn`'s MoE
//! block). Everything else is replicated on every rank and data-parallel as without experts.
//!
//! Gradients. Every rank's loss is the mean over its own `B / world` rows, and the job's loss is
//! the mean of those. A rank's expert gradient comes out of backward already summed over the
//! members of its group (the exchange's backward sends each token's gradient back to the
//! expert's holder); summing it over the replicas that hold the same experts and dividing by
//! `world` gives the gradient of the job's loss: NOT an average over the expert group, whose
//! members hold different experts. The replicas sum in rank order, so they keep equal bits.
//!
//! Norm. The global gradient norm that clipping uses counts every expert once:
//! `all_reduce(|g_experts|^2 / replicas)` over the world, added to the replicated part's.

use anychip_core::{grad_norm, no_grad, Tensor};
use anychip_optim::AdamW;
use anychip_port::{Collectives, DType};
use std::sync::Arc;

type Result<T> = anychip_core::Result<T>;

/// Where a rank stands in a `replicas x ep` job (module header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpertLayout {
    pub rank: usize,
    pub world: usize,
    /// Ranks per expert group.
    pub ep: usize,
}

impl ExpertLayout {
    /// The layout of `rank` in a job of `world` ranks with expert groups of `ep`; the message
    /// says what to change when `ep` does not divide `world`.
    pub fn new(rank: usize, world: usize, ep: usize) -> std::result::Result<ExpertLayout, String> {
        if ep == 0 || world % ep != 0 || rank >= world {
            return Err(format!(
                "--ep {ep} does not divide the {world} ranks of this job; launch a multiple of {ep} ranks (mpirun -np) or pick an --ep that divides {world}"
            ));
        }
        Ok(ExpertLayout { rank, world, ep })
    }
    /// This rank's place in its expert group (which experts it holds).
    pub fn member(&self) -> usize {
        self.rank % self.ep
    }
    /// Which copy of the experts this rank's group holds.
    pub fn replica(&self) -> usize {
        self.rank / self.ep
    }
    /// Copies of the experts in the job (the data-parallel degree of the experts).
    pub fn replicas(&self) -> usize {
        self.world / self.ep
    }
    /// The ranks of this rank's expert group, in expert order.
    pub fn members(&self) -> Vec<usize> {
        (0..self.ep).map(|j| self.replica() * self.ep + j).collect()
    }
    /// The ranks holding the same experts as this one (itself included), ascending.
    pub fn peers(&self) -> Vec<usize> {
        (0..self.replicas()).map(|i| i * self.ep + self.member()).collect()
    }
}

/// One rank's experts under expert parallelism: their gradients' reduction, their AdamW, and
/// their gathering to rank 0 for a checkpoint.
pub struct ExpertParallel {
    coll: Arc<dyn Collectives>,
    layout: ExpertLayout,
    /// AdamW over this rank's expert weights (their moments live only here and on the replicas).
    pub opt: AdamW,
}

impl ExpertParallel {
    /// `opt` holds this rank's expert weights, in the order every rank lists its own (layer,
    /// then expert, then up and down); `coll` spans the whole job.
    pub fn new(coll: Arc<dyn Collectives>, layout: ExpertLayout, opt: AdamW) -> Result<ExpertParallel> {
        if coll.world() != layout.world || coll.rank() != layout.rank {
            return Err(err(format!(
                "expert layout of rank {} of {} over collectives of rank {} of {}",
                layout.rank,
                layout.world,
                coll.rank(),
                coll.world()
            )));
        }
        Ok(ExpertParallel { coll, layout, opt })
    }

    /// Where this rank stands.
    pub fn layout(&self) -> ExpertLayout {
        self.layout
    }

    /// The gradient of the job's loss for this rank's experts, from this rank's backward
    /// (aligned with `opt.groups`): summed over the replicas in rank order, over `world`.
    pub fn reduce_grads(&self, grads: &[Tensor]) -> Result<Vec<Tensor>> {
        let _g = no_grad();
        if grads.len() != self.opt.groups.len() {
            return Err(err(format!("{} expert gradients for {} experts weights", grads.len(), self.opt.groups.len())));
        }
        let mine = flatten(grads)?;
        let peers = self.layout.peers();
        let n = mine.len();
        let mut sum = vec![0f32; n];
        if peers.len() == 1 {
            sum = mine;
        } else {
            // Each peer gets this rank's whole gradient; the sum runs over the peers in rank
            // order on every one of them, so all end with the same bits.
            let port = grads[0].port();
            let counts = |per: usize| {
                let mut c = vec![0usize; self.layout.world];
                peers.iter().for_each(|&r| c[r] = per);
                c
            };
            let send: Vec<f32> = peers.iter().flat_map(|_| mine.iter().copied()).collect();
            let send = Tensor::from_f32(port, &send, &[send.len()], DType::F32)?;
            let recv = Tensor::zeros(port, &[n * peers.len()], DType::F32)?;
            self.coll.all_to_all_v(&send.view(), &counts(n), &recv.view(), &counts(n))?;
            for part in recv.to_vec_f32()?.chunks(n.max(1)) {
                sum.iter_mut().zip(part).for_each(|(s, x)| *s += x);
            }
        }
        let inv = 1.0 / self.layout.world as f32;
        sum.iter_mut().for_each(|x| *x *= inv);
        unflatten(&sum, grads)
    }

    /// The squared norm of every expert's gradient in the job, the same `[1]` tensor on every
    /// rank, from this rank's reduced expert gradients (one all-reduce over the world).
    pub fn squared_norm(&self, reduced: &[Tensor]) -> Result<Tensor> {
        let _g = no_grad();
        let refs: Vec<&Tensor> = reduced.iter().collect();
        let n = grad_norm(&refs)?;
        // Every replica holds these experts: each adds its 1/replicas share.
        let share = n.mul(&n)?.mul_scalar(1.0 / self.layout.replicas() as f64)?;
        self.coll.all_reduce(&share.view())?;
        Ok(share)
    }

    /// Gather `local` (this rank's tensors, the same count and shapes on every rank: its expert
    /// weights or moments) to rank 0: there, per member of expert group 0, that member's tensors;
    /// `None` on the other ranks. Every rank must call it.
    pub fn gather_to_root(&self, local: &[Tensor]) -> Result<Option<Vec<Vec<Tensor>>>> {
        let _g = no_grad();
        let Some(first) = local.first() else { return Ok(None) };
        let port = first.port();
        let mine = flatten(local)?;
        let n = mine.len();
        let (rank, ep) = (self.layout.rank, self.layout.ep);
        let mut send_counts = vec![0usize; self.layout.world];
        if self.layout.replica() == 0 {
            send_counts[0] = n;
        }
        let mut recv_counts = vec![0usize; self.layout.world];
        if rank == 0 {
            recv_counts[..ep].iter_mut().for_each(|c| *c = n);
        }
        let send = Tensor::from_f32(port, if send_counts[0] > 0 { &mine } else { &[] }, &[send_counts[0]], DType::F32)?;
        let recv = Tensor::zeros(port, &[recv_counts.iter().sum::<usize>()], DType::F32)?;
        self.coll.all_to_all_v(&send.view(), &send_counts, &recv.view(), &recv_counts)?;
        if rank != 0 {
            return Ok(None);
        }
        let all = recv.to_vec_f32()?;
        Ok(Some(all.chunks(n.max(1)).take(ep).map(|part| unflatten(part, local)).collect::<Result<_>>()?))
    }
}

/// The f32 values of `ts`, one after another.
fn flatten(ts: &[Tensor]) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(ts.iter().map(|t| t.numel()).sum());
    for t in ts {
        out.extend(t.to_vec_f32()?);
    }
    Ok(out)
}

/// Tensors shaped as `like` (F32, on their port) holding `flat` one after another.
fn unflatten(flat: &[f32], like: &[Tensor]) -> Result<Vec<Tensor>> {
    let mut at = 0;
    like.iter()
        .map(|t| {
            let n = t.numel();
            at += n;
            Tensor::from_f32(t.port(), &flat[at - n..at], t.shape(), DType::F32)
        })
        .collect()
}

fn err(msg: impl Into<String>) -> anychip_core::Error {
    anychip_core::Error::Port(anychip_port::PortError::Invalid(msg.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_groups_consecutive_ranks() {
        let l = ExpertLayout::new(5, 8, 4).unwrap();
        assert_eq!((l.member(), l.replica(), l.replicas()), (1, 1, 2));
        assert_eq!(l.members(), vec![4, 5, 6, 7]);
        assert_eq!(l.peers(), vec![1, 5]);
        let e = ExpertLayout::new(0, 6, 4).unwrap_err();
        assert!(e.contains("--ep 4 does not divide the 6 ranks"), "{e}");
    }
}
