//! Tensors, views and define-by-run autograd over any port.
