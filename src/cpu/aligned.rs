//! Buffers of f64 data whose first element starts a cache line.
//!
//! The kernel loads and stores lane-vectors of four f64 (32 bytes). A `Vec` of them is only
//! 8-byte aligned, so on a typical heap half of its vectors straddled two cache lines, and
//! each such access costs two. On dev (tHu, `kernel_loop`, five alternating rounds, session
//! 7), aligning the lane buffers and the normsys coefficients and factors took the fastest
//! call from 11.7–12.8 µs to 11.0–11.7 µs; the normsys polynomial pass alone (rdtsc marks in
//! a throwaway build) fell by about a fifth.

use std::ops::{Deref, DerefMut};

/// One cache line of storage.
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy)]
struct Line([f64; 8]);

/// Types made of f64 only, with no padding: every bit pattern is a value, and their
/// alignment (8) divides a line's.
///
/// # Safety
/// Implement only for such types.
pub(crate) unsafe trait F64Data: Copy {}
// SAFETY: f64 and arrays of f64 (or of such arrays) have no padding and accept any bits.
unsafe impl F64Data for f64 {}
// SAFETY: as above.
unsafe impl<const N: usize> F64Data for [f64; N] {}
// SAFETY: as above.
unsafe impl<const N: usize, const M: usize> F64Data for [[f64; N]; M] {}

/// `len` values of `T` from the start of a cache line, dereferencing to a slice.
#[derive(Debug, Clone)]
pub(crate) struct Aligned<T: F64Data> {
    lines: Vec<Line>,
    len: usize,
    _t: std::marker::PhantomData<T>,
}

impl<T: F64Data> Aligned<T> {
    /// `len` copies of `value`.
    pub(crate) fn filled(len: usize, value: T) -> Self {
        let bytes = len * std::mem::size_of::<T>();
        let mut a = Aligned {
            lines: vec![Line([0.0; 8]); bytes.div_ceil(64)],
            len,
            _t: std::marker::PhantomData,
        };
        a.fill(value);
        a
    }

    /// A copy of `values`.
    pub(crate) fn from_slice(values: &[T]) -> Self
    where
        T: Default,
    {
        let mut a = Self::filled(values.len(), T::default());
        a.copy_from_slice(values);
        a
    }
}

impl<T: F64Data> Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the lines hold at least len * size_of::<T>() initialised bytes, their start
        // is 64-byte aligned (more than T needs), and any bits are a T (F64Data).
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<T>(), self.len) }
    }
}

impl<T: F64Data> DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<T>(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_a_line_and_holds_its_values() {
        for n in [0, 1, 3, 8, 9, 100] {
            let a = Aligned::filled(n, 2.5f64);
            assert_eq!(a.as_ptr() as usize % 64, 0);
            assert_eq!(a.len(), n);
            assert!(a.iter().all(|&v| v == 2.5));
            let lanes: Vec<[f64; 4]> = (0..n).map(|i| [i as f64, 1.0, 2.0, 3.0]).collect();
            let b = Aligned::from_slice(&lanes);
            assert_eq!(b.as_ptr() as usize % 64, 0);
            assert_eq!(&b[..], &lanes[..]);
            let six: Vec<[[f64; 4]; 6]> = (0..n).map(|i| [[i as f64; 4]; 6]).collect();
            let mut c = Aligned::from_slice(&six);
            assert_eq!(&c[..], &six[..]);
            c.fill([[7.0; 4]; 6]);
            assert!(c.iter().all(|v| *v == [[7.0; 4]; 6]));
        }
    }
}
