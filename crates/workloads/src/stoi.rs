//! C++ `std::stoi` as Avalon's workloads use it: leading whitespace skipped, an optional sign,
//! decimal digits up to the first non-digit ("1.5" reads as 1), 32-bit range.

/// Why `std::stoi` would throw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoiError {
    /// `std::invalid_argument`: no digits at the start.
    Invalid,
    /// `std::out_of_range`: outside `int`.
    OutOfRange,
}

pub(crate) fn stoi(text: &str) -> Result<i32, StoiError> {
    let trimmed = text.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (negative, rest) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(StoiError::Invalid);
    }
    let mut value: i64 = 0;
    for b in rest[..digits].bytes() {
        value = value * 10 + i64::from(b - b'0');
        if value > i64::from(i32::MAX) + 1 {
            return Err(StoiError::OutOfRange);
        }
    }
    let value = if negative { -value } else { value };
    i32::try_from(value).map_err(|_| StoiError::OutOfRange)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_std_stoi() {
        assert_eq!(stoi("42"), Ok(42));
        assert_eq!(stoi("  -7xyz"), Ok(-7));
        assert_eq!(stoi("+0100"), Ok(100));
        assert_eq!(stoi("1.5"), Ok(1));
        assert_eq!(stoi("2147483647"), Ok(i32::MAX));
        assert_eq!(stoi("-2147483648"), Ok(i32::MIN));
        assert_eq!(stoi("2147483648"), Err(StoiError::OutOfRange));
        assert_eq!(stoi("99999999999999999999999"), Err(StoiError::OutOfRange));
        assert_eq!(stoi("abc"), Err(StoiError::Invalid));
        assert_eq!(stoi("-"), Err(StoiError::Invalid));
        assert_eq!(stoi(""), Err(StoiError::Invalid));
    }
}
