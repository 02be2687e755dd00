//! Human-readable durations: exec round trips are µs-scale, boots are seconds; one
//! fixed unit would print either `0.1` or `1374.1`.

/// `ms` milliseconds as `92.1 µs`, `12.3 ms`, `812 ms` or `1.37 s`.
pub fn duration_ms(ms: f64) -> String {
    let a = ms.abs();
    if a < 1.0 {
        format!("{:.1} µs", ms * 1e3)
    } else if a < 100.0 {
        format!("{ms:.1} ms")
    } else if a < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_follow_magnitude() {
        assert_eq!(duration_ms(0.0921), "92.1 µs");
        assert_eq!(duration_ms(12.34), "12.3 ms");
        assert_eq!(duration_ms(812.4), "812 ms");
        assert_eq!(duration_ms(1374.1), "1.37 s");
        assert_eq!(duration_ms(-5.0), "-5.0 ms");
    }
}
