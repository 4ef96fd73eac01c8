//! Define-by-run reverse-mode autograd: each op output holds a node with its inputs and a
//! backward closure; `backward()` walks the graph in reverse topological order.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

type BackwardFn = Box<dyn Fn(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

/// Called with each leaf and its gradient once that gradient is final.
type ReadyFn<'a> = &'a mut dyn FnMut(&Tensor, &Tensor) -> Result<()>;

/// One recorded op: its inputs and how to turn the output gradient into theirs.
pub(crate) struct Node {
    pub(crate) op: &'static str,
    /// The [`crate::in_region`] region the op was recorded in; its backward runs in it too.
    region: Option<&'static str>,
    /// None once a [`Tensor::backward_once`] pass has used it: dropping the inputs and the
    /// closure (with the activations it saved) is what frees a layer's memory as soon as its
    /// backward has run, instead of when the whole graph goes.
    saved: Mutex<Option<Arc<Saved>>>,
}

/// What an op keeps for its backward.
struct Saved {
    inputs: Vec<Tensor>,
    backward: BackwardFn,
}

impl Node {
    pub(crate) fn new(op: &'static str, inputs: Vec<Tensor>, backward: BackwardFn) -> Node {
        let region = crate::current_region();
        Node { op, region, saved: Mutex::new(Some(Arc::new(Saved { inputs, backward }))) }
    }

    /// The saved state, taken out of the node when `release` is set.
    fn saved(&self, release: bool) -> Option<Arc<Saved>> {
        let mut s = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        if release {
            s.take()
        } else {
            s.clone()
        }
    }
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread record the graph.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Restores gradient recording when dropped.
pub struct NoGradGuard(bool);

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.0));
    }
}

/// Stop recording the graph on this thread until the guard is dropped.
pub fn no_grad() -> NoGradGuard {
    let prev = GRAD_ENABLED.with(|g| g.replace(false));
    NoGradGuard(prev)
}

/// Gradients of the leaves (parameters) reached by a backward pass, keyed by tensor id.
#[derive(Default)]
pub struct Grads(HashMap<u64, Tensor>);

impl Grads {
    /// The gradient of `t`, if it was reached.
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.0.get(&t.id())
    }
    /// Remove and return the gradient of `t`.
    pub fn remove(&mut self, t: &Tensor) -> Option<Tensor> {
        self.0.remove(&t.id())
    }
    /// Number of leaf gradients.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether no gradient was produced.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Tensor {
    /// Backpropagate from this one-element tensor (d self / d self = 1).
    pub fn backward(&self) -> Result<Grads> {
        self.backward_with(self.loss_seed()?)
    }

    /// [`Tensor::backward`] that frees each op's saved tensors as soon as its backward has
    /// run, as a training step wants: activations are released while the gradients are being
    /// made, so the two never all live at once. The graph cannot be walked again afterwards
    /// (a second pass is an error, not a silent zero).
    pub fn backward_once(&self) -> Result<Grads> {
        self.run_backward(self.loss_seed()?, None, true)
    }

    /// d self / d self = 1 for a one-element loss; any other shape is an error.
    fn loss_seed(&self) -> Result<Tensor> {
        if self.numel() != 1 {
            return Err(Error::Backward(format!("start from a one-element loss, got shape {:?}", self.shape())));
        }
        Tensor::full(self.port(), self.shape(), 1.0, self.dtype())
    }

    /// Backpropagate with an explicit gradient of this tensor.
    pub fn backward_with(&self, grad: Tensor) -> Result<Grads> {
        self.run_backward(grad, None, false)
    }

    /// Backpropagate from this one-element loss like [`Tensor::backward`], calling
    /// `ready(leaf, grad)` the moment each leaf's gradient is final, while the rest of the
    /// backward pass is still to run. Data parallelism starts exchanging those gradients then,
    /// instead of after the whole pass. Every leaf reached is also in the returned [`Grads`].
    /// Like [`Tensor::backward_once`], it frees the graph as it goes.
    pub fn backward_hooked(&self, ready: ReadyFn<'_>) -> Result<Grads> {
        self.run_backward(self.loss_seed()?, Some(ready), true)
    }

    fn run_backward(&self, grad: Tensor, mut ready: Option<ReadyFn<'_>>, release: bool) -> Result<Grads> {
        if !self.requires_grad() {
            return Err(Error::Backward(
                "this tensor does not depend on any parameter (requires_grad is false)".into(),
            ));
        }
        let mut order = topo_order(self)?;
        // Uses of each tensor still to be differentiated. A leaf's gradient is final when its
        // count reaches zero, usually long before its own place in `order` (a depth-first
        // order puts a layer's weights ahead of everything below the layer): handing it over
        // then is what lets data parallelism overlap the exchange with the rest of backward.
        let mut uses: HashMap<u64, usize> = HashMap::new();
        for t in &order {
            if let Some(saved) = t.node().and_then(|n| n.saved(false)) {
                for i in saved.inputs.iter().filter(|i| i.requires_grad()) {
                    *uses.entry(i.id()).or_insert(0) += 1;
                }
            }
        }
        let mut pending: HashMap<u64, Tensor> = HashMap::new();
        pending.insert(self.id(), grad);
        let mut leaves = Grads::default();
        let mut finish = |leaf: &Tensor, g: Tensor, leaves: &mut Grads| -> Result<()> {
            if let Some(ready) = ready.as_mut() {
                ready(leaf, &g)?;
            }
            leaves.0.insert(leaf.id(), g);
            Ok(())
        };
        let _guard = crate::no_grad();
        // Popped, so that with `release` each op's tensors go as soon as it is done.
        while let Some(t) = order.pop() {
            let t = &t;
            let g = pending.remove(&t.id());
            let Some(node) = t.node() else {
                // A leaf whose gradient was not final earlier: the root itself, or a use that
                // a backward did not account for.
                if let Some(g) = g {
                    finish(t, g, &mut leaves)?;
                }
                continue;
            };
            let saved = node.saved(release).ok_or_else(|| freed(node.op))?;
            let grads = match g {
                Some(g) => {
                    let needs: Vec<bool> = saved.inputs.iter().map(|i| i.requires_grad()).collect();
                    let grads = crate::in_region(node.region, || (saved.backward)(&g, &needs))?;
                    debug_assert_eq!(grads.len(), saved.inputs.len(), "backward of {} returned wrong arity", node.op);
                    grads
                }
                // No gradient reached this op: nothing flows to its inputs, but their uses
                // through it are settled all the same.
                None => vec![None; saved.inputs.len()],
            };
            for (input, gi) in saved.inputs.iter().zip(grads) {
                if !input.requires_grad() {
                    continue;
                }
                if let Some(gi) = gi {
                    if gi.shape() != input.shape() {
                        return Err(Error::Backward(format!(
                            "{} produced a gradient of shape {:?} for an input of shape {:?}",
                            node.op,
                            gi.shape(),
                            input.shape()
                        )));
                    }
                    let acc = match pending.remove(&input.id()) {
                        Some(prev) => prev.add(&gi)?,
                        None => gi,
                    };
                    pending.insert(input.id(), acc);
                }
                let left = uses.get_mut(&input.id()).map(|n| {
                    *n -= 1;
                    *n
                });
                if left == Some(0) && input.node().is_none() {
                    if let Some(g) = pending.remove(&input.id()) {
                        finish(input, g, &mut leaves)?;
                    }
                }
            }
        }
        Ok(leaves)
    }
}

/// The error for a walk into a graph that an earlier [`Tensor::backward_once`] freed.
fn freed(op: &str) -> Error {
    Error::Backward(format!(
        "the graph through {op} was already freed by an earlier backward pass; \
         run the forward again, or use backward() to keep the graph for a second pass"
    ))
}

/// Tensors reachable from `root` through nodes, inputs before the ops that use them.
fn topo_order(root: &Tensor) -> Result<Vec<Tensor>> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    // Iterative DFS: the graph of a deep model is too deep for recursion on small stacks.
    let mut stack: Vec<(Tensor, bool)> = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !seen.insert(t.id()) {
            continue;
        }
        stack.push((t.clone(), true));
        if let Some(node) = t.node() {
            let saved = node.saved(false).ok_or_else(|| freed(node.op))?;
            for i in &saved.inputs {
                if i.requires_grad() && !seen.contains(&i.id()) {
                    stack.push((i.clone(), false));
                }
            }
        }
    }
    Ok(order)
}
