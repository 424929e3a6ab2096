//! A bit reader over base64url text, shared by the TCF and GPP decoders.
//!
//! Both formats are big-endian bit strings written six bits per base64url character. The reader
//! works on the text directly (a lookup per character) instead of decoding it into a buffer, so
//! decoding allocates nothing and a skipped bitfield costs nothing. It validates the alphabet up
//! front, so every later read can only fail by running out of bits.

use super::DecodeError;

/// base64url value of each byte, or `INVALID`.
const INVALID: u8 = 0xff;
const TABLE: [u8; 256] = {
    let mut t = [INVALID; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// A cursor over the bits of one base64url segment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BitReader<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    /// Validates `segment` as base64url. Trailing `=` are tolerated and ignored (some encoders add
    /// them, iabtcf-java's own test vectors among them); any other byte outside the alphabet,
    /// including standard base64's `+` and `/`, is an error.
    pub(crate) fn new(segment: &'a str) -> Result<Self, DecodeError> {
        let text = segment.trim_end_matches('=').as_bytes();
        if text.is_empty() {
            return Err(DecodeError::Empty);
        }
        if let Some(at) = text.iter().position(|&b| TABLE[b as usize] == INVALID) {
            return Err(DecodeError::BadCharacter { at });
        }
        Ok(BitReader { text, pos: 0 })
    }

    /// Total number of bits in the segment.
    pub(crate) fn len(&self) -> usize {
        self.text.len() * 6
    }

    /// The position of the next bit to read.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Bits left to read.
    pub(crate) fn remaining(&self) -> usize {
        self.len() - self.pos
    }

    /// The bit at absolute position `at`, which the caller has checked is in range.
    pub(crate) fn bit_at(&self, at: usize) -> bool {
        let sextet = TABLE[self.text[at / 6] as usize];
        (sextet >> (5 - at % 6)) & 1 == 1
    }

    /// Reads `n <= 64` bits as an unsigned big-endian integer.
    pub(crate) fn read(&mut self, n: u32) -> Result<u64, DecodeError> {
        debug_assert!(n <= 64);
        self.need(n as usize)?;
        let mut v = 0u64;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.bit_at(self.pos));
            self.pos += 1;
        }
        Ok(v)
    }

    pub(crate) fn read_bool(&mut self) -> Result<bool, DecodeError> {
        Ok(self.read(1)? == 1)
    }

    pub(crate) fn read_u8(&mut self, n: u32) -> Result<u8, DecodeError> {
        debug_assert!(n <= 8);
        Ok(self.read(n)? as u8)
    }

    pub(crate) fn read_u16(&mut self, n: u32) -> Result<u16, DecodeError> {
        debug_assert!(n <= 16);
        Ok(self.read(n)? as u16)
    }

    pub(crate) fn read_u32(&mut self, n: u32) -> Result<u32, DecodeError> {
        debug_assert!(n <= 32);
        Ok(self.read(n)? as u32)
    }

    /// Skips `n` bits, failing if fewer remain.
    pub(crate) fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        self.need(n)?;
        self.pos += n;
        Ok(())
    }

    /// Reads a Fibonacci-coded positive integer (Zeckendorf bits, least significant first,
    /// terminated by a second consecutive `1`), as GPP's header uses. Values beyond `u16` are
    /// rejected: no GPP section id comes close, and the cap bounds the work.
    pub(crate) fn read_fibonacci(&mut self) -> Result<u16, DecodeError> {
        let (mut a, mut b) = (1u32, 2u32); // the Fibonacci numbers weighted by the next two bits
        let mut value = 0u32;
        let mut last = false;
        loop {
            let bit = self.read_bool()?;
            if bit && last {
                return u16::try_from(value).map_err(|_| DecodeError::OutOfRange("fibonacci"));
            }
            if bit {
                value += a;
            }
            last = bit;
            if value > u32::from(u16::MAX) || a > u32::from(u16::MAX) {
                return Err(DecodeError::OutOfRange("fibonacci"));
            }
            (a, b) = (b, a + b);
        }
    }

    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.remaining() < n {
            Err(DecodeError::Truncated { at: self.pos })
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
pub(crate) mod writer {
    //! A bit writer for building test strings: the inverse of [`super::BitReader`].

    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    #[derive(Default)]
    pub(crate) struct BitWriter {
        bits: Vec<bool>,
    }

    impl BitWriter {
        pub(crate) fn new() -> Self {
            Self::default()
        }

        pub(crate) fn int(&mut self, value: u64, n: u32) -> &mut Self {
            for i in (0..n).rev() {
                self.bits.push((value >> i) & 1 == 1);
            }
            self
        }

        pub(crate) fn bool(&mut self, b: bool) -> &mut Self {
            self.bits.push(b);
            self
        }

        /// A bitfield of `n` bits where bit i (0-based) is set when `i + 1` is in `set`.
        pub(crate) fn field(&mut self, set: &[u32], n: u32) -> &mut Self {
            for i in 1..=n {
                self.bits.push(set.contains(&i));
            }
            self
        }

        pub(crate) fn fibonacci(&mut self, mut v: u32) -> &mut Self {
            assert!(v > 0);
            let mut fibs = vec![1u32, 2];
            while *fibs.last().unwrap() <= v {
                let n = fibs[fibs.len() - 1] + fibs[fibs.len() - 2];
                fibs.push(n);
            }
            let mut out = vec![false; fibs.len()];
            for i in (0..fibs.len()).rev() {
                if fibs[i] <= v {
                    v -= fibs[i];
                    out[i] = true;
                }
            }
            while out.last() == Some(&false) {
                out.pop();
            }
            self.bits.extend(out);
            self.bits.push(true);
            self
        }

        /// The base64url text, zero-padded to whole characters.
        pub(crate) fn finish(&self) -> String {
            self.bits
                .chunks(6)
                .map(|c| {
                    let mut v = 0usize;
                    for i in 0..6 {
                        v = (v << 1) | usize::from(c.get(i).copied().unwrap_or(false));
                    }
                    ALPHABET[v] as char
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::writer::BitWriter;
    use super::*;

    /// Integers of every width round-trip through the writer and the reader.
    #[test]
    fn reads_back_what_was_written() {
        let mut w = BitWriter::new();
        w.int(2, 6).int(0xabcdef123, 36).bool(true).int(65535, 16);
        let s = w.finish();
        let mut r = BitReader::new(&s).unwrap();
        assert_eq!(r.read(6).unwrap(), 2);
        assert_eq!(r.read(36).unwrap(), 0xabcdef123);
        assert!(r.read_bool().unwrap());
        assert_eq!(r.read_u16(16).unwrap(), 65535);
    }

    /// The Fibonacci codes in the GPP spec decode to their values.
    #[test]
    fn fibonacci_codes_match_the_spec_table() {
        for (v, code) in [
            (1u16, "11"),
            (2, "011"),
            (3, "0011"),
            (4, "1011"),
            (5, "00011"),
        ] {
            let mut w = BitWriter::new();
            for c in code.chars() {
                w.bool(c == '1');
            }
            let s = w.finish();
            assert_eq!(BitReader::new(&s).unwrap().read_fibonacci().unwrap(), v);
            let mut w2 = BitWriter::new();
            w2.fibonacci(u32::from(v));
            assert_eq!(w2.finish(), s, "encoder agrees for {v}");
        }
    }

    /// A Fibonacci code that never terminates, or is huge, is an error, not a loop or overflow.
    #[test]
    fn unterminated_or_huge_fibonacci_is_an_error() {
        assert!(BitReader::new("AAAA").unwrap().read_fibonacci().is_err());
        assert!(
            BitReader::new("qqqqqqqq")
                .unwrap()
                .read_fibonacci()
                .is_err()
        ); // 101010...
    }

    /// Reading past the end fails with `Truncated`; bad characters are rejected up front.
    #[test]
    fn rejects_truncation_and_bad_alphabet() {
        let mut r = BitReader::new("B").unwrap();
        assert!(matches!(r.read(7), Err(DecodeError::Truncated { .. })));
        assert!(matches!(
            BitReader::new("A+B"),
            Err(DecodeError::BadCharacter { at: 1 })
        ));
        assert!(matches!(
            BitReader::new("A/B"),
            Err(DecodeError::BadCharacter { .. })
        ));
        assert!(matches!(BitReader::new("=="), Err(DecodeError::Empty)));
        assert_eq!(BitReader::new("CA==").unwrap().len(), 12);
    }
}
