//! The CLI's own `pow`, so that it does not load libm.so.6.
//!
//! indicatif's rate and ETA estimate (f64::powf, which the compiler turns
//! into a call to the C library's `pow`) is the only thing in the CLI that
//! libm.so.6 provides, and loading that library cost every run about 0.05
//! ms (an empty C program: 0.57 ms to spawn and reap, 0.62 ms with libm;
//! 600 interleaved runs), 3% of a hot copy the CLI makes itself. Defined
//! here, the symbol is resolved inside the binary, and the linker's
//! `--as-needed` drops the library std asks for. glibc's libm.a cannot be
//! linked into a binary that loads libc.so (its `pow` reads the loader's
//! private CPU features), so the definition is the `libm` crate's, the
//! Rust port of musl's, which is as exact (within an ulp) and sets no
//! errno, which nothing in Rust reads.

/// C's `pow(x, y)`.
// The name is the C library's on purpose: calls the compiler emits for
// f64::powf bind to it. Nothing else in the process calls `pow` expecting
// anything else: neither the C library nor the C code linked in (ring's)
// calls it, and the symbol is not exported to shared libraries.
#[no_mangle]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pow_keeps_cs_rules_and_exact_values() {
        // Values indicatif's estimator computes (0.1 to a fraction), and
        // cases whose result is exact or defined by C's rules.
        assert_eq!(pow(2.0, 10.0), 1024.0);
        assert_eq!(pow(0.1, 0.0), 1.0);
        assert_eq!(pow(-2.0, 3.0), -8.0);
        assert!(pow(-2.0, 0.5).is_nan());
        assert_eq!(pow(0.0, -1.0), f64::INFINITY);
        let got = pow(0.1, 1.0 / 15.0);
        assert!((got - 0.857_695_898_590_894).abs() < 1e-15, "{got}");
        // Through f64::powf, which the compiler lowers to a call of `pow`
        // (black_box: it may not fold the call away).
        let (x, y) = (std::hint::black_box(0.25f64), std::hint::black_box(0.5f64));
        assert_eq!(x.powf(y), 0.5);
    }
}
