//! Randomness for keys, IVs and nonces, from the operating system's generator through aws-lc.

/// The system's random generator failed. On any supported platform this does not happen; it is
/// an error rather than a panic so that a worker reports it instead of dying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

/// Fills `dest` with cryptographically secure random bytes.
///
/// # Errors
/// [`RandomError`] if the system generator fails.
pub fn fill_random(dest: &mut [u8]) -> Result<(), RandomError> {
    aws_lc_rs::rand::fill(dest).map_err(|_| RandomError)
}

/// An array of `N` cryptographically secure random bytes.
///
/// # Errors
/// [`RandomError`] if the system generator fails.
pub fn random_array<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut out = [0u8; N];
    fill_random(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_draws_differ() {
        let a: [u8; 32] = random_array().expect("rng");
        let b: [u8; 32] = random_array().expect("rng");
        assert_ne!(a, b);
    }
}
