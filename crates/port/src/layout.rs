/// Shape, strides and offset of a view into a buffer, all counted in elements.
///
/// Strides are non-negative; a stride of 0 broadcasts. Permute, slice, expand and reshape of
/// contiguous data are layout changes in the engine and never reach a port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub offset: usize,
}

impl Layout {
    /// Row-major contiguous layout of `shape` at offset 0.
    pub fn contiguous(shape: &[usize]) -> Layout {
        let mut strides = vec![0; shape.len()];
        let mut s = 1;
        for i in (0..shape.len()).rev() {
            strides[i] = s;
            s *= shape[i];
        }
        Layout { shape: shape.to_vec(), strides, offset: 0 }
    }
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Rank (number of dimensions).
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    /// True when elements are laid out row-major without gaps (offset may be non-zero).
    pub fn is_contiguous(&self) -> bool {
        let mut s = 1;
        for i in (0..self.shape.len()).rev() {
            if self.shape[i] != 1 && self.strides[i] != s {
                return false;
            }
            s *= self.shape[i];
        }
        true
    }
    /// One past the largest element index this layout touches (0 for an empty view).
    pub fn span(&self) -> usize {
        if self.numel() == 0 {
            return self.offset;
        }
        self.offset + self.shape.iter().zip(&self.strides).map(|(&n, &s)| (n - 1) * s).sum::<usize>() + 1
    }
    /// Element index (into the buffer) of the `i`-th element in row-major order.
    pub fn index_of(&self, mut i: usize) -> usize {
        let mut at = self.offset;
        for d in (0..self.shape.len()).rev() {
            let n = self.shape[d];
            at += (i % n) * self.strides[d];
            i /= n;
        }
        at
    }
    /// Iterate buffer element indices in row-major order (the slow, obviously-correct walk).
    pub fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.numel()).map(move |i| self.index_of(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn contiguous_and_transposed() {
        let l = Layout::contiguous(&[2, 3]);
        assert_eq!(l.strides, vec![3, 1]);
        assert!(l.is_contiguous());
        assert_eq!(l.span(), 6);
        let t = Layout { shape: vec![3, 2], strides: vec![1, 3], offset: 0 };
        assert!(!t.is_contiguous());
        assert_eq!(t.indices().collect::<Vec<_>>(), vec![0, 3, 1, 4, 2, 5]);
        let b = Layout { shape: vec![2, 3], strides: vec![0, 1], offset: 4 };
        assert_eq!(b.indices().collect::<Vec<_>>(), vec![4, 5, 6, 4, 5, 6]);
        assert_eq!(b.span(), 7);
    }
}
