//! The [`LinearOperator`] trait and its combinators ([`Identity`], [`Scaled`], [`Compose`],
//! [`Sum`]), modelled on SigPy's `Linop` and BART's `linop_*`.
//!
//! Operators act on flat, C-ordered `&[C32]` buffers owned by the caller, so an iterative
//! solver allocates its vectors once and calls `forward`/`adjoint`/`normal` thousands of times
//! without allocating. The slice methods **panic** if a buffer length differs from
//! `ishape`/`oshape` (a programming error, like indexing out of bounds); the ndarray wrappers
//! ([`LinearOperator::apply`], [`LinearOperator::apply_adjoint`],
//! [`LinearOperator::apply_normal`]) check shapes and return [`OpsError::Shape`] instead.
//!
//! Temporaries that composite operators need come from a per-thread scratch pool
//! ([`with_scratch`]): after the first call for a given size no memory is allocated.
//!
//! ```
//! use amri_ops::linop::{Compose, Identity, LinearOperator, Scaled};
//! use amri_core::C32;
//! use ndarray::ArrayD;
//! let a = Scaled::new(C32::new(0.0, 2.0), Identity::new(&[2, 3]));
//! let b = Compose::new(a, Identity::new(&[2, 3])).unwrap();
//! let x = ArrayD::from_elem(vec![2, 3], C32::new(1.0, 0.0));
//! let y = b.apply(&x.view()).unwrap();
//! assert_eq!(y[[1, 2]], C32::new(0.0, 2.0));
//! ```

use std::cell::RefCell;
use std::sync::Arc;

use amri_core::C32;
use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::error::{OpsError, Result};

thread_local! {
    static POOL: RefCell<Vec<Vec<C32>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a scratch buffer of `len` complex values taken from a per-thread pool.
///
/// The contents on entry are unspecified (left over from earlier use): `f` must write before
/// it reads. Buffers only grow, so repeated calls of the same sizes never allocate. Nested calls
/// get distinct buffers; buffers are returned to the pool when `f` returns.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [C32]) -> R) -> R {
    let mut buf = POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default();
    if buf.len() < len {
        buf.resize(len, C32::new(0.0, 0.0));
    }
    let r = f(&mut buf[..len]);
    POOL.with(|p| p.borrow_mut().push(buf));
    r
}

/// Number of elements of an array of `shape` (1 for the empty shape, as for a scalar).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// A complex64 linear map `A: C^ishape → C^oshape` on flat C-ordered buffers.
///
/// Contract: `forward` overwrites all of `y`, `adjoint` overwrites all of `x`, `normal`
/// overwrites all of `out`; inputs are never modified. Slice lengths must equal
/// `numel(ishape)` / `numel(oshape)`; implementations assert this and panic otherwise.
pub trait LinearOperator: Send + Sync {
    /// Shape of the input (domain), C order, e.g. `[rows, cols]` for an image.
    fn ishape(&self) -> &[usize];

    /// Shape of the output (range), C order, e.g. `[coils, rows, cols]` for SENSE k-space.
    fn oshape(&self) -> &[usize];

    /// `y = A x`.
    fn forward(&self, x: &[C32], y: &mut [C32]);

    /// `x = A^H y` (conjugate transpose, with respect to the plain Euclidean inner product).
    fn adjoint(&self, y: &[C32], x: &mut [C32]);

    /// `out = A^H A x`. The default runs `forward` into a pooled scratch buffer then `adjoint`
    /// (no allocation after the first call); operators with a cheaper form override it.
    fn normal(&self, x: &[C32], out: &mut [C32]) {
        with_scratch(self.osize(), |t| {
            self.forward(x, t);
            self.adjoint(t, out);
        })
    }

    /// A short human-readable name, used in error messages and test reports.
    fn name(&self) -> String {
        "LinearOperator".to_string()
    }

    /// Number of input elements, `numel(ishape)`.
    fn isize(&self) -> usize {
        numel(self.ishape())
    }

    /// Number of output elements, `numel(oshape)`.
    fn osize(&self) -> usize {
        numel(self.oshape())
    }

    /// `A x` for an array of shape `ishape`; returns [`OpsError::Shape`] on a wrong shape.
    fn apply(&self, x: &ArrayViewD<C32>) -> Result<ArrayD<C32>> {
        check_shape(
            &format!("input of {}", self.name()),
            self.ishape(),
            x.shape(),
        )?;
        let xs = x.as_standard_layout();
        let mut y = ArrayD::zeros(IxDyn(self.oshape()));
        self.forward(contiguous(&xs), contiguous_mut(&mut y));
        Ok(y)
    }

    /// `A^H y` for an array of shape `oshape`; returns [`OpsError::Shape`] on a wrong shape.
    fn apply_adjoint(&self, y: &ArrayViewD<C32>) -> Result<ArrayD<C32>> {
        check_shape(
            &format!("adjoint input of {}", self.name()),
            self.oshape(),
            y.shape(),
        )?;
        let ys = y.as_standard_layout();
        let mut x = ArrayD::zeros(IxDyn(self.ishape()));
        self.adjoint(contiguous(&ys), contiguous_mut(&mut x));
        Ok(x)
    }

    /// `A^H A x` for an array of shape `ishape`; returns [`OpsError::Shape`] on a wrong shape.
    fn apply_normal(&self, x: &ArrayViewD<C32>) -> Result<ArrayD<C32>> {
        check_shape(
            &format!("normal input of {}", self.name()),
            self.ishape(),
            x.shape(),
        )?;
        let xs = x.as_standard_layout();
        let mut o = ArrayD::zeros(IxDyn(self.ishape()));
        self.normal(contiguous(&xs), contiguous_mut(&mut o));
        Ok(o)
    }
}

fn contiguous<'a>(a: &'a ndarray::CowArray<'_, C32, IxDyn>) -> &'a [C32] {
    // `as_standard_layout` guarantees C-contiguity.
    a.as_slice().unwrap_or(&[])
}

fn contiguous_mut(a: &mut ArrayD<C32>) -> &mut [C32] {
    // Freshly built arrays are C-contiguous.
    a.as_slice_mut().unwrap_or(&mut [])
}

/// Returns [`OpsError::Shape`] unless `got == expected`.
pub fn check_shape(what: &str, expected: &[usize], got: &[usize]) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(OpsError::shape(what, expected, got))
    }
}

/// Panics with a clear message when a buffer length is wrong (slice API contract).
#[inline]
pub(crate) fn assert_len(what: &str, expected: usize, got: usize) {
    assert_eq!(
        expected, got,
        "{what}: buffer has {got} elements, the operator expects {expected}"
    );
}

macro_rules! forward_impl {
    ($ptr:ty) => {
        impl<T: LinearOperator + ?Sized> LinearOperator for $ptr {
            fn ishape(&self) -> &[usize] {
                (**self).ishape()
            }
            fn oshape(&self) -> &[usize] {
                (**self).oshape()
            }
            fn forward(&self, x: &[C32], y: &mut [C32]) {
                (**self).forward(x, y)
            }
            fn adjoint(&self, y: &[C32], x: &mut [C32]) {
                (**self).adjoint(y, x)
            }
            fn normal(&self, x: &[C32], out: &mut [C32]) {
                (**self).normal(x, out)
            }
            fn name(&self) -> String {
                (**self).name()
            }
        }
    };
}
forward_impl!(Box<T>);
forward_impl!(Arc<T>);
forward_impl!(&T);

/// The identity on arrays of a given shape; `A = A^H = A^H A = I`.
#[derive(Clone, Debug)]
pub struct Identity {
    shape: Vec<usize>,
}

impl Identity {
    /// Identity on arrays of `shape`.
    pub fn new(shape: &[usize]) -> Self {
        Self {
            shape: shape.to_vec(),
        }
    }
}

impl LinearOperator for Identity {
    fn ishape(&self) -> &[usize] {
        &self.shape
    }
    fn oshape(&self) -> &[usize] {
        &self.shape
    }
    fn forward(&self, x: &[C32], y: &mut [C32]) {
        assert_len("Identity input", self.isize(), x.len());
        y.copy_from_slice(x);
    }
    fn adjoint(&self, y: &[C32], x: &mut [C32]) {
        assert_len("Identity adjoint input", self.osize(), y.len());
        x.copy_from_slice(y);
    }
    fn normal(&self, x: &[C32], out: &mut [C32]) {
        self.forward(x, out)
    }
    fn name(&self) -> String {
        format!("Identity{:?}", self.shape)
    }
}

/// `α A` for a complex scalar `α`; adjoint `conj(α) A^H`, normal `|α|² A^H A`.
#[derive(Clone, Debug)]
pub struct Scaled<A> {
    alpha: C32,
    op: A,
}

impl<A: LinearOperator> Scaled<A> {
    /// The operator `alpha · op`.
    pub fn new(alpha: C32, op: A) -> Self {
        Self { alpha, op }
    }

    /// The scale factor `α`.
    pub fn alpha(&self) -> C32 {
        self.alpha
    }

    /// The wrapped operator `A`.
    pub fn inner(&self) -> &A {
        &self.op
    }
}

impl<A: LinearOperator> LinearOperator for Scaled<A> {
    fn ishape(&self) -> &[usize] {
        self.op.ishape()
    }
    fn oshape(&self) -> &[usize] {
        self.op.oshape()
    }
    fn forward(&self, x: &[C32], y: &mut [C32]) {
        self.op.forward(x, y);
        y.iter_mut().for_each(|v| *v *= self.alpha);
    }
    fn adjoint(&self, y: &[C32], x: &mut [C32]) {
        self.op.adjoint(y, x);
        let a = self.alpha.conj();
        x.iter_mut().for_each(|v| *v *= a);
    }
    fn normal(&self, x: &[C32], out: &mut [C32]) {
        self.op.normal(x, out);
        let a = self.alpha.norm_sqr();
        out.iter_mut().for_each(|v| *v *= a);
    }
    fn name(&self) -> String {
        format!("Scaled({}, {})", self.alpha, self.op.name())
    }
}

/// The composition `A ∘ B` (apply `B` first); adjoint `B^H A^H`, normal `B^H (A^H A) B`, which
/// uses `A`'s fast normal.
#[derive(Clone, Debug)]
pub struct Compose<A, B> {
    a: A,
    b: B,
}

impl<A: LinearOperator, B: LinearOperator> Compose<A, B> {
    /// `a ∘ b`; [`OpsError::Shape`] unless `a.ishape() == b.oshape()`.
    pub fn new(a: A, b: B) -> Result<Self> {
        check_shape(
            &format!("Compose: input of {} vs output of {}", a.name(), b.name()),
            a.ishape(),
            b.oshape(),
        )?;
        Ok(Self { a, b })
    }

    /// The outer operator `A` (applied last).
    pub fn outer(&self) -> &A {
        &self.a
    }

    /// The inner operator `B` (applied first).
    pub fn inner(&self) -> &B {
        &self.b
    }
}

impl<A: LinearOperator, B: LinearOperator> LinearOperator for Compose<A, B> {
    fn ishape(&self) -> &[usize] {
        self.b.ishape()
    }
    fn oshape(&self) -> &[usize] {
        self.a.oshape()
    }
    fn forward(&self, x: &[C32], y: &mut [C32]) {
        with_scratch(self.b.osize(), |t| {
            self.b.forward(x, t);
            self.a.forward(t, y);
        })
    }
    fn adjoint(&self, y: &[C32], x: &mut [C32]) {
        with_scratch(self.b.osize(), |t| {
            self.a.adjoint(y, t);
            self.b.adjoint(t, x);
        })
    }
    fn normal(&self, x: &[C32], out: &mut [C32]) {
        let m = self.b.osize();
        with_scratch(m, |t| {
            self.b.forward(x, t);
            with_scratch(m, |u| {
                self.a.normal(t, u);
                self.b.adjoint(u, out);
            })
        })
    }
    fn name(&self) -> String {
        format!("({} ∘ {})", self.a.name(), self.b.name())
    }
}

/// The sum `A + B` of two operators with equal shapes; adjoint `A^H + B^H`.
#[derive(Clone, Debug)]
pub struct Sum<A, B> {
    a: A,
    b: B,
}

impl<A: LinearOperator, B: LinearOperator> Sum<A, B> {
    /// `a + b`; [`OpsError::Shape`] unless both input and output shapes agree.
    pub fn new(a: A, b: B) -> Result<Self> {
        check_shape(
            &format!("Sum: input of {} vs {}", b.name(), a.name()),
            a.ishape(),
            b.ishape(),
        )?;
        check_shape(
            &format!("Sum: output of {} vs {}", b.name(), a.name()),
            a.oshape(),
            b.oshape(),
        )?;
        Ok(Self { a, b })
    }
}

impl<A: LinearOperator, B: LinearOperator> LinearOperator for Sum<A, B> {
    fn ishape(&self) -> &[usize] {
        self.a.ishape()
    }
    fn oshape(&self) -> &[usize] {
        self.a.oshape()
    }
    fn forward(&self, x: &[C32], y: &mut [C32]) {
        self.a.forward(x, y);
        with_scratch(y.len(), |t| {
            self.b.forward(x, t);
            y.iter_mut().zip(t.iter()).for_each(|(a, b)| *a += b);
        })
    }
    fn adjoint(&self, y: &[C32], x: &mut [C32]) {
        self.a.adjoint(y, x);
        with_scratch(x.len(), |t| {
            self.b.adjoint(y, t);
            x.iter_mut().zip(t.iter()).for_each(|(a, b)| *a += b);
        })
    }
    fn name(&self) -> String {
        format!("({} + {})", self.a.name(), self.b.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_checked() {
        let e = Compose::new(Identity::new(&[2, 3]), Identity::new(&[3, 2]));
        assert!(matches!(e, Err(OpsError::Shape { .. })));
        let e = Sum::new(Identity::new(&[2, 3]), Identity::new(&[6]));
        assert!(matches!(e, Err(OpsError::Shape { .. })));
        let x = ArrayD::<C32>::zeros(IxDyn(&[3, 2]));
        assert!(Identity::new(&[2, 3]).apply(&x.view()).is_err());
    }

    #[test]
    fn sum_and_scale_values() {
        let s = Sum::new(
            Scaled::new(C32::new(2.0, 0.0), Identity::new(&[2])),
            Scaled::new(C32::new(0.0, 1.0), Identity::new(&[2])),
        )
        .unwrap();
        let x = [C32::new(1.0, 0.0), C32::new(0.0, 1.0)];
        let mut y = [C32::default(); 2];
        s.forward(&x, &mut y);
        assert_eq!(y, [C32::new(2.0, 1.0), C32::new(-1.0, 2.0)]);
        s.adjoint(&x, &mut y);
        assert_eq!(y, [C32::new(2.0, -1.0), C32::new(1.0, 2.0)]);
        s.normal(&x, &mut y);
        // (2+i)^H (2+i) = 5
        assert_eq!(y, [C32::new(5.0, 0.0), C32::new(0.0, 5.0)]);
    }

    #[test]
    fn scratch_is_reused_and_nested_buffers_are_distinct() {
        with_scratch(4, |a| {
            a.fill(C32::new(1.0, 0.0));
            with_scratch(4, |b| {
                b.fill(C32::new(2.0, 0.0));
            });
            assert!(a.iter().all(|v| v.re == 1.0));
        });
    }
}
