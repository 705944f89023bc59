//! A bounds-checked big-endian reader over one frame's bytes. Every read either
//! succeeds or reports [`Short`]; nothing here can index out of range.

/// The frame ended before a field the layout requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Short;

pub(crate) type R<T> = Result<T, Short>;

#[derive(Debug, Clone)]
pub(crate) struct Cur<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cur { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(Short)?;
        let s = self.buf.get(self.pos..end).ok_or(Short)?;
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn skip(&mut self, n: usize) -> R<()> {
        self.take(n).map(|_| ())
    }

    /// Skip up to `n` bytes, stopping at the end.
    pub(crate) fn skip_max(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.buf.len());
    }

    fn arr<const N: usize>(&mut self) -> R<[u8; N]> {
        self.take(N)?.try_into().map_err(|_| Short)
    }

    pub(crate) fn u8(&mut self) -> R<u8> {
        Ok(u8::from_be_bytes(self.arr()?))
    }

    pub(crate) fn u16(&mut self) -> R<u16> {
        Ok(u16::from_be_bytes(self.arr()?))
    }

    pub(crate) fn i16(&mut self) -> R<i16> {
        Ok(i16::from_be_bytes(self.arr()?))
    }

    pub(crate) fn u24(&mut self) -> R<u32> {
        let [a, b, c] = self.arr()?;
        Ok(u32::from_be_bytes([0, a, b, c]))
    }

    pub(crate) fn u32(&mut self) -> R<u32> {
        Ok(u32::from_be_bytes(self.arr()?))
    }

    pub(crate) fn i32(&mut self) -> R<i32> {
        Ok(i32::from_be_bytes(self.arr()?))
    }

    pub(crate) fn u64(&mut self) -> R<u64> {
        Ok(u64::from_be_bytes(self.arr()?))
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// Everything not read yet; the cursor ends up at the end.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let r = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        r
    }

    /// Everything not read yet, without consuming it.
    pub(crate) fn peek_rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounded() {
        let mut c = Cur::new(&[1, 2, 3]);
        assert_eq!(c.u16(), Ok(0x0102));
        assert_eq!(c.u16(), Err(Short));
        assert_eq!(c.u8(), Ok(3));
        assert_eq!(c.u8(), Err(Short));
        assert_eq!(c.take(usize::MAX), Err(Short));
        c.skip_max(usize::MAX);
        assert_eq!(c.remaining(), 0);
        assert!(c.rest().is_empty());
    }
}
