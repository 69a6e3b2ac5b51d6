//! Philox4x32-10, a counter-based generator (Salmon et al., SC'11, "Random123").
//!
//! A toy's random numbers are a pure function of (seed, ensemble, toy index, position): no state
//! is carried from one number to the next, so toy `k` is the same whatever the thread count,
//! batch size or order of work, a run splits into shards that reproduce it exactly, and the
//! WGSL and CUDA engines compute the same integers with 32-bit multiplies.
//!
//! Layout: key = (seed low 32 bits, seed high 32 bits); counter = (position / 2, ensemble,
//! toy low 32 bits, toy high 32 bits); 64-bit word `position` of a toy's stream is
//! `(w[2j] << 32) | w[2j + 1]` of that block, with `j = position % 2`.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

#[inline(always)]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// Philox4x32 with 10 rounds.
#[inline]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// The random stream of one toy of one ensemble.
#[derive(Debug, Clone, Copy)]
pub struct ToyStream {
    key: [u32; 2],
    ensemble: u32,
    toy: u64,
}

impl ToyStream {
    pub fn new(seed: u64, ensemble: u32, toy: u64) -> Self {
        ToyStream {
            key: [seed as u32, (seed >> 32) as u32],
            ensemble,
            toy,
        }
    }

    /// The 64-bit word at `position` of this toy's stream.
    #[inline]
    pub fn u64_at(&self, position: u32) -> u64 {
        let w = philox4x32_10(
            [
                position / 2,
                self.ensemble,
                self.toy as u32,
                (self.toy >> 32) as u32,
            ],
            self.key,
        );
        let j = (position % 2) as usize * 2;
        ((w[j] as u64) << 32) | w[j + 1] as u64
    }

    /// A uniform number in the open interval (0, 1) from the word at `position` (53 bits).
    #[inline]
    pub fn uniform_at(&self, position: u32) -> f64 {
        uniform_open(self.u64_at(position))
    }
}

/// Maps 64 random bits to (0, 1): the top 52 bits, offset by half a step, so that neither 0
/// nor 1 can occur (both ends are exactly representable distances from the interval's ends).
#[inline]
pub fn uniform_open(x: u64) -> f64 {
    ((x >> 12) as f64 + 0.5) * (1.0 / (1u64 << 52) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors of Random123 (kat_vectors, philox4x32_10).
    #[test]
    fn philox_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn streams_are_pure_functions_of_their_coordinates() {
        let a = ToyStream::new(42, 0, 7);
        let b = ToyStream::new(42, 0, 7);
        assert_eq!(a.u64_at(5), b.u64_at(5));
        assert_ne!(a.u64_at(5), ToyStream::new(42, 1, 7).u64_at(5));
        assert_ne!(a.u64_at(5), ToyStream::new(42, 0, 8).u64_at(5));
        assert_ne!(a.u64_at(5), ToyStream::new(43, 0, 7).u64_at(5));
        assert_ne!(a.u64_at(4), a.u64_at(5));
        let u = a.uniform_at(3);
        assert!(u > 0.0 && u < 1.0);
        assert!(uniform_open(0) > 0.0 && uniform_open(u64::MAX) < 1.0);
    }
}
