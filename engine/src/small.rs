//! Copies and compares of short byte strings, at the sizes column values have.
//!
//! A slice copy of a length known only at run time becomes a `memcpy` call. Column
//! values are almost always 1 to 32 bytes, where the call costs more than the copy;
//! matching the length first lets each arm compile to a few plain moves.

macro_rules! by_size {
    ($len:expr, $n:ident => $small:expr, _ => $large:expr) => {
        match $len {
            1 => {
                const $n: usize = 1;
                $small
            }
            2 => {
                const $n: usize = 2;
                $small
            }
            4 => {
                const $n: usize = 4;
                $small
            }
            8 => {
                const $n: usize = 8;
                $small
            }
            12 => {
                const $n: usize = 12;
                $small
            }
            16 => {
                const $n: usize = 16;
                $small
            }
            32 => {
                const $n: usize = 32;
                $small
            }
            _ => $large,
        }
    };
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    bytes.try_into().expect("length matched")
}

/// `dst.copy_from_slice(src)`.
#[inline(always)]
pub fn copy(dst: &mut [u8], src: &[u8]) {
    by_size!(src.len(), N => {
        let dst: &mut [u8; N] = dst.try_into().expect("equal lengths");
        *dst = array::<N>(src);
    }, _ => dst.copy_from_slice(src))
}

/// `out.extend_from_slice(src)`.
#[inline(always)]
pub fn extend(out: &mut Vec<u8>, src: &[u8]) {
    by_size!(src.len(), N => out.extend_from_slice(&array::<N>(src)), _ => out.extend_from_slice(src))
}

/// `a == b`.
#[inline(always)]
pub fn eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && by_size!(a.len(), N => array::<N>(a) == array::<N>(b), _ => a == b)
}

/// Copies up to 16 bytes to the front of `dst`, with at most two fixed-size moves that
/// may overlap in the middle (for var refs, whose inline values have any length).
#[inline(always)]
pub fn copy_short(dst: &mut [u8; 16], src: &[u8]) {
    let n = src.len();
    debug_assert!(n <= 16);
    if n >= 8 {
        dst[..8].copy_from_slice(&array::<8>(&src[..8]));
        dst[n - 8..n].copy_from_slice(&array::<8>(&src[n - 8..]));
    } else if n >= 4 {
        dst[..4].copy_from_slice(&array::<4>(&src[..4]));
        dst[n - 4..n].copy_from_slice(&array::<4>(&src[n - 4..]));
    } else {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    }
}
